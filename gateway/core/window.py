"""One aggregate window: the figures for one (model, version, cohort) over a fixed time slice.

This is the value the canary gates judge and the cloud receives. Produced by
``gateway.core.aggregate``; consumed by ``gateway.core.gates`` and the uplink.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GroupKey:
    model_id: str
    model_version: str
    cohort: str  # value of the cohort attribute (e.g. hw=rev2), "" when unknown
    shadow: bool = False  # metrics of a candidate running in shadow beside the active model


@dataclass(frozen=True)
class WindowStats:
    key: GroupKey
    start: float  # POSIX seconds, inclusive
    end: float  # exclusive
    devices: int  # distinct devices that reported in the window
    samples: int  # metric messages
    inferences: int
    errors: int
    error_rate: float | None  # errors / inferences; None with no inferences
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    cpu_mean: float | None
    cpu_max: float | None
    ram_mean: float | None
    ram_max: float | None
    temp_mean_c: float | None
    temp_max_c: float | None
    class_counts: Mapping[str, int] = field(default_factory=dict)
    mean_confidence: float | None = None
    unknown_rate: float | None = None
    # inferences per device in the window: the gates count warm-up per device from these
    device_inferences: Mapping[str, int] = field(default_factory=dict)
    # messages refused as invalid from devices on this version (counted against a candidate)
    invalid: int = 0
    device_invalid: Mapping[str, int] = field(default_factory=dict)

    @property
    def class_shares(self) -> dict[str, float]:
        total = sum(self.class_counts.values())
        return {k: v / total for k, v in self.class_counts.items()} if total else {}

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for the uplink (device ids stay at the site; only their count leaves)."""
        return {
            "model_id": self.key.model_id,
            "model_version": self.key.model_version,
            "cohort": self.key.cohort,
            "shadow": self.key.shadow,
            "start": self.start,
            "end": self.end,
            "devices": self.devices,
            "samples": self.samples,
            "inferences": self.inferences,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "latency_ms": {
                "p50": self.latency_p50_ms,
                "p95": self.latency_p95_ms,
                "p99": self.latency_p99_ms,
            },
            "cpu_percent": {"mean": self.cpu_mean, "max": self.cpu_max},
            "ram_percent": {"mean": self.ram_mean, "max": self.ram_max},
            "temperature_c": {"mean": self.temp_mean_c, "max": self.temp_max_c},
            "class_counts": dict(self.class_counts),
            "mean_confidence": self.mean_confidence,
            "unknown_rate": self.unknown_rate,
            "invalid": self.invalid,
        }
