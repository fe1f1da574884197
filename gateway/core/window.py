"""One aggregate window: the figures for one (model, version, cohort) over a fixed time slice.

This is the value the canary gates judge and the cloud receives. Produced by
``gateway.core.aggregate``; consumed by ``gateway.core.gates`` and the uplink.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from gateway.core.agreement import Agreement, AgreementSums, pooled
from gateway.core.metrics import MetricsMessage, encode


class GroupKey(NamedTuple):
    """What a window's figures are of. A named tuple: one is made and hashed for every message
    (a frozen dataclass hashes and compares in Python)."""

    model_id: str
    model_version: str
    cohort: str  # value of the cohort attribute (e.g. hw=rev2), "" when unknown
    shadow: bool = False  # metrics of a candidate running in shadow beside the active model


@dataclass(slots=True)
class DeviceWindow:
    """One device's reports in one window, as sums: what the gates compare a device with its own
    past (:mod:`gateway.core.gates.levels`). Filled in place by the aggregator, read-only after."""

    samples: int = 0
    inferences: int = 0
    errors: int = 0
    lat_sum: float = 0.0  # log latency, weighted by inferences (latency is compared as a ratio)
    lat_w: int = 0
    cpu_sum: float = 0.0
    cpu_n: int = 0
    ram_sum: float = 0.0
    ram_n: int = 0
    temp_sum: float = 0.0
    temp_n: int = 0
    conf_sum: float = 0.0
    conf_w: int = 0
    unknown_sum: float = 0.0
    unknown_w: int = 0
    classes: dict[str, int] = field(default_factory=dict)
    agreement: AgreementSums | None = None  # shadow messages: the two models on the same frames

    def add_agreement(self, a: Agreement) -> None:
        if self.agreement is None:
            self.agreement = AgreementSums()
        self.agreement.add(a)

    def add(
        self,
        inferences: int,
        errors: int,
        latency_ms: float | None,
        cpu: float | None,
        ram: float | None,
        temp: float | None,
        confidence: float | None,
        unknown: float | None,
        classes: Mapping[str, int],
    ) -> None:
        self.samples += 1
        self.inferences += inferences
        self.errors += errors
        w = inferences if inferences > 1 else 1
        if latency_ms is not None:
            self.lat_sum += math.log(max(latency_ms, 1e-3)) * w
            self.lat_w += w
        if cpu is not None:
            self.cpu_sum += cpu
            self.cpu_n += 1
        if ram is not None:
            self.ram_sum += ram
            self.ram_n += 1
        if temp is not None:
            self.temp_sum += temp
            self.temp_n += 1
        if confidence is not None:
            self.conf_sum += confidence * w
            self.conf_w += w
        if unknown is not None:
            self.unknown_sum += unknown * w
            self.unknown_w += w
        if classes:
            mine = self.classes
            for name, k in classes.items():
                mine[name] = mine.get(name, 0) + k

    def message(self, model_id: str, model_version: str) -> MetricsMessage:
        """The window turned back into one metrics message (the reference fields) that gives the
        same figures to the gates: the sums, and the means with their weights (one message of all
        the inferences). A site's recorded trace is made of these (``ota-gateway gate trace``)."""

        def mean(total: float, n: float, lo: float, hi: float) -> float | None:
            return min(hi, max(lo, total / n)) if n else None

        return MetricsMessage(
            model_id=model_id,
            model_version=model_version,
            num_inferences=self.inferences,
            num_errors=self.errors,
            cpu_percent=mean(self.cpu_sum, self.cpu_n, 0.0, 25_600.0),
            ram_percent=mean(self.ram_sum, self.ram_n, 0.0, 100.0),
            temperature_c=mean(self.temp_sum, self.temp_n, -100.0, 250.0),
            mean_confidence=mean(self.conf_sum, self.conf_w, 0.0, 1.0),
            unknown_rate=mean(self.unknown_sum, self.unknown_w, 0.0, 1.0),
            # the mean of log latency, as the gates compare it
            avg_latency_ms=min(3.6e6, math.exp(self.lat_sum / self.lat_w)) if self.lat_w else None,
            class_counts=dict(self.classes) if self.classes else None,
            agreement=self.agreement.as_message() if self.agreement is not None else None,
            shadow=self.agreement is not None,  # only a shadow message carries an agreement
        )

    def as_message(self, model_id: str, model_version: str) -> dict[str, Any]:
        """:meth:`message` in its wire form (:func:`gateway.core.metrics.encode`)."""
        return encode(self.message(model_id, model_version))


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
    # each device's own figures in the window (the gates' paired comparisons; never sent upstream)
    device_windows: Mapping[str, DeviceWindow] = field(default_factory=dict)

    @property
    def class_shares(self) -> dict[str, float]:
        total = sum(self.class_counts.values())
        return {k: v / total for k, v in self.class_counts.items()} if total else {}

    def to_json(self) -> dict[str, Any]:
        """Plain JSON for the uplink (device ids stay at the site; only their count leaves); a
        shadow window with its devices' agreement pooled."""
        out = self._json()
        agreement = pooled(dw.agreement for dw in self.device_windows.values())
        if agreement is not None:
            out["agreement"] = agreement
        return out

    def _json(self) -> dict[str, Any]:
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
