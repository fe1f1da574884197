"""Fixed-window aggregation of device metrics, per (model, version, cohort, shadow): pure logic.

Samples are placed by the gateway's receive time into windows aligned on multiples of
``window_s``. :meth:`Aggregator.close_due` hands back every window that has ended, as
:class:`~gateway.core.window.WindowStats`: what the canary gates judge and what goes upstream.

Weighting: latency enters the sketch once per inference a report covers (a report of 500
inferences at 40 ms average counts 500 times), so percentiles are over inferences, not over
devices; confidence and unknown rate are inference-weighted means; CPU, RAM and temperature are
plain means and maxima over reports. Bounded: at most ``max_groups`` groups per window (more are
counted in ``overflow`` and dropped) and ``max_devices`` distinct devices per group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.core.metrics import Sample
from gateway.core.sketch import LatencySketch
from gateway.core.window import GroupKey, WindowStats


@dataclass
class _Acc:
    samples: int = 0
    inferences: int = 0
    errors: int = 0
    sketch: LatencySketch = field(default_factory=LatencySketch)
    cpu_sum: float = 0.0
    cpu_n: int = 0
    cpu_max: float | None = None
    ram_sum: float = 0.0
    ram_n: int = 0
    ram_max: float | None = None
    temp_sum: float = 0.0
    temp_n: int = 0
    temp_max: float | None = None
    classes: dict[str, int] = field(default_factory=dict)
    conf_sum: float = 0.0
    conf_w: int = 0
    unknown_sum: float = 0.0
    unknown_w: int = 0
    devices: dict[str, int] = field(default_factory=dict)  # device -> inferences
    invalid: dict[str, int] = field(default_factory=dict)  # device -> messages refused as invalid


def _max(a: float | None, b: float) -> float:
    return b if a is None else max(a, b)


class Aggregator:
    def __init__(
        self,
        window_s: float = 60.0,
        cohort_attribute: str = "hw",
        *,
        max_groups: int = 1000,
        max_devices: int = 100_000,
    ) -> None:
        self.window_s = window_s
        self.cohort_attribute = cohort_attribute
        self.max_groups = max_groups
        self.max_devices = max_devices
        self.windows: dict[float, dict[GroupKey, _Acc]] = {}
        self.overflow = 0
        self.added = 0

    def window_start(self, now: float) -> float:
        return math.floor(now / self.window_s) * self.window_s

    def _group(self, at: float, key: GroupKey) -> _Acc | None:
        groups = self.windows.setdefault(self.window_start(at), {})
        acc = groups.get(key)
        if acc is None:
            if len(groups) >= self.max_groups:
                self.overflow += 1
                return None
            acc = groups[key] = _Acc()
        return acc

    def add_invalid(
        self, device_id: str, model_id: str, model_version: str, attrs: Mapping[str, str], at: float
    ) -> None:
        """A message refused as invalid from a device on this version: the gates count it against
        that version (an agent that counts errors its own way sends them)."""
        acc = self._group(at, GroupKey(model_id, model_version, attrs.get(self.cohort_attribute, "")))
        if acc is None or (device_id not in acc.invalid and len(acc.invalid) >= self.max_devices):
            return
        acc.invalid[device_id] = acc.invalid.get(device_id, 0) + 1

    def add(self, sample: Sample, attrs: Mapping[str, str]) -> None:
        key = GroupKey(
            sample.model_id, sample.model_version, attrs.get(self.cohort_attribute, ""), sample.shadow
        )
        acc = self._group(sample.received_at, key)
        if acc is None:
            return
        if sample.device_id not in acc.devices and len(acc.devices) >= self.max_devices:
            self.overflow += 1
            return
        self.added += 1
        acc.samples += 1
        acc.inferences += sample.inferences
        acc.errors += sample.errors
        acc.devices[sample.device_id] = acc.devices.get(sample.device_id, 0) + sample.inferences
        weight = max(1, sample.inferences)
        if sample.latency_ms is not None:
            acc.sketch.add(sample.latency_ms, weight)
        if sample.cpu_percent is not None:
            acc.cpu_sum += sample.cpu_percent
            acc.cpu_n += 1
            acc.cpu_max = _max(acc.cpu_max, sample.cpu_percent)
        if sample.ram_percent is not None:
            acc.ram_sum += sample.ram_percent
            acc.ram_n += 1
            acc.ram_max = _max(acc.ram_max, sample.ram_percent)
        if sample.temperature_c is not None:
            acc.temp_sum += sample.temperature_c
            acc.temp_n += 1
            acc.temp_max = _max(acc.temp_max, sample.temperature_c)
        for name, n in sample.class_counts.items():
            acc.classes[name] = acc.classes.get(name, 0) + n
        if sample.mean_confidence is not None:
            acc.conf_sum += sample.mean_confidence * weight
            acc.conf_w += weight
        if sample.unknown_rate is not None:
            acc.unknown_sum += sample.unknown_rate * weight
            acc.unknown_w += weight

    def close_due(self, now: float) -> list[WindowStats]:
        """Every window whose end is at or before ``now``, oldest first."""
        out: list[WindowStats] = []
        for start in sorted(s for s in self.windows if s + self.window_s <= now):
            for key, acc in self.windows.pop(start).items():
                out.append(_stats(key, start, start + self.window_s, acc))
        return out


def _stats(key: GroupKey, start: float, end: float, a: _Acc) -> WindowStats:
    return WindowStats(
        key=key,
        start=start,
        end=end,
        devices=len(a.devices),
        samples=a.samples,
        inferences=a.inferences,
        errors=a.errors,
        error_rate=a.errors / a.inferences if a.inferences else None,
        latency_p50_ms=a.sketch.quantile(0.50),
        latency_p95_ms=a.sketch.quantile(0.95),
        latency_p99_ms=a.sketch.quantile(0.99),
        cpu_mean=a.cpu_sum / a.cpu_n if a.cpu_n else None,
        cpu_max=a.cpu_max,
        ram_mean=a.ram_sum / a.ram_n if a.ram_n else None,
        ram_max=a.ram_max,
        temp_mean_c=a.temp_sum / a.temp_n if a.temp_n else None,
        temp_max_c=a.temp_max,
        class_counts=dict(a.classes),
        mean_confidence=a.conf_sum / a.conf_w if a.conf_w else None,
        unknown_rate=a.unknown_sum / a.unknown_w if a.unknown_w else None,
        device_inferences=dict(a.devices),
        invalid=sum(a.invalid.values()),
        device_invalid=dict(a.invalid),
    )
