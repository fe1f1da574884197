"""The device record and the narrow interface every source of device facts writes through.

Sources: a device's own poll (``poll``), the site inventory file (``file``), mDNS (``mdns``),
metrics (``metrics``) and events (``event``). The inventory store merges them; the rollout logic
reads records as plain values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

SOURCES = ("poll", "file", "mdns", "metrics", "event")


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    attrs: Mapping[str, str] = field(default_factory=dict)  # hw, fw, region, line, ...
    sources: frozenset[str] = frozenset()
    first_seen: float = 0.0
    last_seen: float = 0.0
    model_id: str | None = None
    model_version: str | None = None
    last_event: str | None = None
    last_event_at: float | None = None
    gone: bool = False  # mDNS goodbye or TTL expiry and no other live source
    blocked_by_firmware: str | None = None  # the version it would get with newer firmware


class DeviceSink(Protocol):
    """Where discovered or reported device facts go (the inventory store implements it)."""

    def upsert(self, device_id: str, attrs: Mapping[str, str], *, source: str, now: float) -> None:
        """Merge ``attrs`` into the device's record; ``model``/``model_version`` set its version."""

    def gone(self, device_id: str, *, source: str, now: float) -> None:
        """The source no longer sees the device (mDNS goodbye or expiry)."""


def still_on(record: DeviceRecord | None, version: str) -> bool:
    """Whether the device's last report has it on ``version`` still (a rollback it reported, or a
    report of another version, says it left): what a halted gate has left to roll back."""
    return record is not None and record.model_version == version and record.last_event != "rolled_back"
