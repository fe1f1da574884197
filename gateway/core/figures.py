"""The figures of a set of device metrics: one mergeable accumulator for the aggregator and the gates.

:class:`Figures` holds sums, counts and maxima, never means: every derived number (error rate, the
CPU, RAM and temperature means, confidence, unknown rate, the share of invalid messages) comes from
its properties, so a window (:mod:`gateway.core.aggregate`) and a wave's evidence
(:mod:`gateway.core.gates`) compute them with the same code.

Two ways in:

- :meth:`Figures.add_sample` adds one report, in place: the aggregator's own accumulator for one
  group of one window, never shared. CPU, RAM and temperature are plain sums over reports;
  confidence and unknown rate are weighted by the inferences a report covers (at least 1).
- :meth:`Figures.of_window` and :meth:`Figures.merged`: what the gates do with closed windows, as
  new values. A window enters with its means weighted by its reports (CPU, RAM, temperature) or by
  its inferences (confidence, unknown rate, and the latency percentiles: across windows, latency is
  the inference-weighted mean of the windows' p50 and p95; within a window it is the aggregator's
  sketch, which lives beside its figures).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.metrics import Sample
from gateway.core.window import WindowStats


def _max(a: float | None, b: float | None) -> float | None:
    if b is None:
        return a
    return b if a is None else max(a, b)


def _summed(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, n in b.items():
        out[k] = out.get(k, 0) + n
    return out


@dataclass(slots=True)
class Figures:
    """Sums over reports or windows, mergeable; the figures are derived on demand."""

    samples: int = 0  # metric messages accepted
    inferences: int = 0
    errors: int = 0
    lat50_w: float = 0.0  # sum of a window's p50 * its inferences (windows merged, not samples)
    lat95_w: float = 0.0
    lat_w: int = 0
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
    per_device: dict[str, int] = field(default_factory=dict)  # inferences per device
    invalid: int = 0  # messages refused as invalid

    # -- in: reports (in place) ------------------------------------------------------------------

    def add_sample(self, sample: Sample) -> None:
        """One accepted report, counted in place (the aggregator's accumulator only)."""
        n = sample.inferences
        self.samples += 1
        self.inferences += n
        self.errors += sample.errors
        per_device = self.per_device
        per_device[sample.device_id] = per_device.get(sample.device_id, 0) + n
        weight = n if n > 1 else 1
        v = sample.cpu_percent
        if v is not None:
            self.cpu_sum += v
            self.cpu_n += 1
            if self.cpu_max is None or v > self.cpu_max:
                self.cpu_max = v
        v = sample.ram_percent
        if v is not None:
            self.ram_sum += v
            self.ram_n += 1
            if self.ram_max is None or v > self.ram_max:
                self.ram_max = v
        v = sample.temperature_c
        if v is not None:
            self.temp_sum += v
            self.temp_n += 1
            if self.temp_max is None or v > self.temp_max:
                self.temp_max = v
        if sample.class_counts:
            classes = self.classes
            for name, k in sample.class_counts.items():
                classes[name] = classes.get(name, 0) + k
        v = sample.mean_confidence
        if v is not None:
            self.conf_sum += v * weight
            self.conf_w += weight
        v = sample.unknown_rate
        if v is not None:
            self.unknown_sum += v * weight
            self.unknown_w += weight

    # -- in: windows (new values) ----------------------------------------------------------------

    @classmethod
    def of_window(cls, w: WindowStats) -> Figures:
        """A closed window's figures, ready to merge: its means weighted back into sums."""
        weight = max(1, w.inferences)
        has_lat = w.latency_p50_ms is not None
        return cls(
            samples=w.samples,
            inferences=w.inferences,
            errors=w.errors,
            lat50_w=(w.latency_p50_ms or 0.0) * weight * has_lat,
            lat95_w=(w.latency_p95_ms or 0.0) * weight * has_lat,
            lat_w=weight * has_lat,
            cpu_sum=(w.cpu_mean or 0.0) * w.samples * (w.cpu_mean is not None),
            cpu_n=w.samples * (w.cpu_mean is not None),
            cpu_max=w.cpu_max,
            ram_sum=(w.ram_mean or 0.0) * w.samples * (w.ram_mean is not None),
            ram_n=w.samples * (w.ram_mean is not None),
            ram_max=w.ram_max,
            temp_sum=(w.temp_mean_c or 0.0) * w.samples * (w.temp_mean_c is not None),
            temp_n=w.samples * (w.temp_mean_c is not None),
            temp_max=w.temp_max_c,
            classes=dict(w.class_counts),
            conf_sum=(w.mean_confidence or 0.0) * weight * (w.mean_confidence is not None),
            conf_w=weight * (w.mean_confidence is not None),
            unknown_sum=(w.unknown_rate or 0.0) * weight * (w.unknown_rate is not None),
            unknown_w=weight * (w.unknown_rate is not None),
            per_device=dict(w.device_inferences),
            invalid=w.invalid,
        )

    def merged(self, o: Figures) -> Figures:
        """Both sets of figures as one, a new value (neither side changes)."""
        return Figures(
            samples=self.samples + o.samples,
            inferences=self.inferences + o.inferences,
            errors=self.errors + o.errors,
            lat50_w=self.lat50_w + o.lat50_w,
            lat95_w=self.lat95_w + o.lat95_w,
            lat_w=self.lat_w + o.lat_w,
            cpu_sum=self.cpu_sum + o.cpu_sum,
            cpu_n=self.cpu_n + o.cpu_n,
            cpu_max=_max(self.cpu_max, o.cpu_max),
            ram_sum=self.ram_sum + o.ram_sum,
            ram_n=self.ram_n + o.ram_n,
            ram_max=_max(self.ram_max, o.ram_max),
            temp_sum=self.temp_sum + o.temp_sum,
            temp_n=self.temp_n + o.temp_n,
            temp_max=_max(self.temp_max, o.temp_max),
            classes=_summed(self.classes, o.classes),
            conf_sum=self.conf_sum + o.conf_sum,
            conf_w=self.conf_w + o.conf_w,
            unknown_sum=self.unknown_sum + o.unknown_sum,
            unknown_w=self.unknown_w + o.unknown_w,
            per_device=_summed(self.per_device, o.per_device),
            invalid=self.invalid + o.invalid,
        )

    def add_window(self, w: WindowStats) -> Figures:
        return self.merged(Figures.of_window(w))

    # -- out -------------------------------------------------------------------------------------

    @property
    def devices(self) -> frozenset[str]:
        return frozenset(self.per_device)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.inferences if self.inferences else None

    @property
    def latency_p50(self) -> float | None:
        return self.lat50_w / self.lat_w if self.lat_w else None

    @property
    def latency_p95(self) -> float | None:
        return self.lat95_w / self.lat_w if self.lat_w else None

    @property
    def cpu(self) -> float | None:
        return self.cpu_sum / self.cpu_n if self.cpu_n else None

    @property
    def ram(self) -> float | None:
        return self.ram_sum / self.ram_n if self.ram_n else None

    @property
    def temp(self) -> float | None:
        return self.temp_sum / self.temp_n if self.temp_n else None

    @property
    def confidence(self) -> float | None:
        return self.conf_sum / self.conf_w if self.conf_w else None

    @property
    def unknown_rate(self) -> float | None:
        return self.unknown_sum / self.unknown_w if self.unknown_w else None

    @property
    def invalid_share(self) -> float | None:
        total = self.samples + self.invalid
        return self.invalid / total if total else None

    # -- on disk (the gate state file) -------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Figures:
        """Also reads the gates' evidence as written before it was :class:`Figures`: its
        ``devices`` list is the keys of ``per_device`` (dropped), and it had no ``cpu_max``."""
        fields = {k: v for k, v in doc.items() if k != "devices"}
        return cls(
            **{
                **fields,
                "classes": dict(doc.get("classes", {})),
                "per_device": dict(doc.get("per_device", {})),
            }
        )
