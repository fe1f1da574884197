"""The site report: one batch per interval of everything the cloud should know about this site.

Whatever the number of devices, the cloud gets one report per ``uplink.report_interval_s``:
inventory changes and device events (drained from the inventory), gate decisions, and the
gateway's own health. (Aggregate windows and raw samples go into the outbox as they happen.) Each part becomes one outbox record of
its kind, so the outbox's overflow policy can tell them apart (raw samples go before aggregates,
decisions and events are kept longest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SiteReport:
    site: str
    at: float
    inventory_changes: Sequence[Mapping[str, Any]] = ()
    inventory_changes_dropped: int = 0
    decisions: Sequence[Mapping[str, Any]] = ()
    health: Mapping[str, Any] = field(default_factory=dict)
    devices: Mapping[str, int] = field(default_factory=dict)  # counts: known, live, blocked by firmware

    def records(self) -> list[tuple[str, dict[str, Any]]]:
        """(kind, body) pairs for the outbox; empty parts are left out, health always goes."""
        out: list[tuple[str, dict[str, Any]]] = []
        if self.inventory_changes or self.inventory_changes_dropped:
            out.append(
                (
                    "inventory",
                    {
                        "site": self.site,
                        "at": self.at,
                        "changes": list(self.inventory_changes),
                        "dropped": self.inventory_changes_dropped,
                    },
                )
            )
        if self.decisions:
            out.append(("decision", {"site": self.site, "at": self.at, "decisions": list(self.decisions)}))
        out.append(
            (
                "health",
                {
                    "site": self.site,
                    "at": self.at,
                    "gateway": dict(self.health),
                    "devices": dict(self.devices),
                },
            )
        )
        return out
