"""Fixed-window aggregation of device metrics, per (model, version, cohort, shadow): pure logic.

Samples are placed by the gateway's receive time into windows aligned on multiples of
``window_s``. :meth:`Aggregator.close_due` hands back every window that has ended, as
:class:`~gateway.core.window.WindowStats`: what the canary gates judge and what goes upstream.

Weighting: latency enters the sketch once per inference a report covers (a report of 500
inferences at 40 ms average counts 500 times), so percentiles are over inferences, not over
devices; confidence and unknown rate are inference-weighted means; CPU, RAM and temperature are
plain means and maxima over reports. Bounded: at most ``max_groups`` groups per window (more are
counted in ``overflow`` and dropped) and ``max_devices`` distinct devices per group. The sums live in
a :class:`~gateway.core.figures.Figures` per group, the accumulator the gates merge windows into.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.core.figures import Figures
from gateway.core.metrics import Sample
from gateway.core.sketch import LatencySketch
from gateway.core.window import DeviceWindow, GroupKey, WindowStats


@dataclass(slots=True)
class _Group:
    """One group of one window: its figures, the latency sketch (percentiles over inferences), and
    the messages refused as invalid per device."""

    figures: Figures = field(default_factory=Figures)
    sketch: LatencySketch = field(default_factory=LatencySketch)
    invalid: dict[str, int] = field(default_factory=dict)
    devices: dict[str, DeviceWindow] = field(default_factory=dict)


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
        self.windows: dict[float, dict[GroupKey, _Group]] = {}
        self.overflow = 0
        self.added = 0

    def window_start(self, now: float) -> float:
        return math.floor(now / self.window_s) * self.window_s

    def _group(self, at: float, key: GroupKey) -> _Group | None:
        groups = self.windows.setdefault(self.window_start(at), {})
        acc = groups.get(key)
        if acc is None:
            if len(groups) >= self.max_groups:
                self.overflow += 1
                return None
            acc = groups[key] = _Group()
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
        acc.figures.invalid += 1

    def add(self, sample: Sample, attrs: Mapping[str, str]) -> None:
        key = GroupKey(
            sample.model_id, sample.model_version, attrs.get(self.cohort_attribute, ""), sample.shadow
        )
        acc = self._group(sample.received_at, key)
        if acc is None:
            return
        per_device = acc.figures.per_device
        if sample.device_id not in per_device and len(per_device) >= self.max_devices:
            self.overflow += 1
            return
        self.added += 1
        acc.figures.add_sample(sample)
        dw = acc.devices.get(sample.device_id)
        if dw is None:
            dw = acc.devices[sample.device_id] = DeviceWindow()
        dw.add(
            sample.inferences,
            sample.errors,
            sample.latency_ms,
            sample.cpu_percent,
            sample.ram_percent,
            sample.temperature_c,
            sample.mean_confidence,
            sample.unknown_rate,
            sample.class_counts,
        )
        if sample.agreement is not None:
            dw.add_agreement(sample.agreement)
        if sample.latency_ms is not None:
            acc.sketch.add(sample.latency_ms, max(1, sample.inferences))

    def close_due(self, now: float) -> list[WindowStats]:
        """Every window whose end is at or before ``now``, oldest first."""
        out: list[WindowStats] = []
        for start in sorted(s for s in self.windows if s + self.window_s <= now):
            for key, acc in self.windows.pop(start).items():
                out.append(_stats(key, start, start + self.window_s, acc))
        return out


def _stats(key: GroupKey, start: float, end: float, g: _Group) -> WindowStats:
    f = g.figures
    return WindowStats(
        key=key,
        start=start,
        end=end,
        devices=len(f.per_device),
        samples=f.samples,
        inferences=f.inferences,
        errors=f.errors,
        error_rate=f.error_rate,
        latency_p50_ms=g.sketch.quantile(0.50),
        latency_p95_ms=g.sketch.quantile(0.95),
        latency_p99_ms=g.sketch.quantile(0.99),
        cpu_mean=f.cpu,
        cpu_max=f.cpu_max,
        ram_mean=f.ram,
        ram_max=f.ram_max,
        temp_mean_c=f.temp,
        temp_max_c=f.temp_max,
        class_counts=dict(f.classes),
        mean_confidence=f.confidence,
        unknown_rate=f.unknown_rate,
        device_inferences=dict(f.per_device),
        invalid=f.invalid,
        device_invalid=dict(g.invalid),
        device_windows=g.devices,
    )
