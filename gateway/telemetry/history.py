"""A bounded history of closed telemetry windows per model version, for the dashboard's charts.

The telemetry ingest hands every batch of closed windows to its ``on_windows`` listeners; this is
one of them. Windows of one (model, version, shadow) that closed together (one per cohort) are
merged into one :class:`Point`, and each series keeps the last ``max_points`` of them in a ring.
At most ``max_series`` series are kept: past that, the one heard from the longest ago is dropped.

Merging follows the aggregator and the gates: latency p50/p95 are the inference-weighted mean of
the cohorts' percentiles, the error rate is errors over inferences, CPU and temperature are means
weighted by reports. Pure: no clock, no I/O; it only remembers what it is given. What the points
mean for a rollout is the gates' business (:mod:`gateway.core.gates`); drawing them is the
dashboard's (:mod:`gateway.http.dashboard`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.core.window import WindowStats

SeriesKey = tuple[str, str, bool]  # (model_id, version, shadow)


@dataclass(frozen=True)
class Point:
    """One closed window of one model version, all cohorts together."""

    start: float
    end: float
    devices: int
    samples: int
    inferences: int
    errors: int
    error_rate: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    cpu_percent: float | None
    temperature_c: float | None
    temperature_max_c: float | None


def _weighted(pairs: Sequence[tuple[float | None, int]]) -> float | None:
    known = [(v, w) for v, w in pairs if v is not None and w > 0]
    total = sum(w for _, w in known)
    return sum(v * w for v, w in known) / total if total else None


def merge(windows: Sequence[WindowStats]) -> Point:
    """The windows of one series and one time slice (one per cohort) as one point."""
    inferences = sum(w.inferences for w in windows)
    errors = sum(w.errors for w in windows)
    lat_weight = [max(w.inferences, w.samples) for w in windows]
    temps = [w.temp_max_c for w in windows if w.temp_max_c is not None]
    return Point(
        start=min(w.start for w in windows),
        end=max(w.end for w in windows),
        devices=sum(w.devices for w in windows),
        samples=sum(w.samples for w in windows),
        inferences=inferences,
        errors=errors,
        error_rate=errors / inferences if inferences else None,
        latency_p50_ms=_weighted([(w.latency_p50_ms, n) for w, n in zip(windows, lat_weight, strict=True)]),
        latency_p95_ms=_weighted([(w.latency_p95_ms, n) for w, n in zip(windows, lat_weight, strict=True)]),
        cpu_percent=_weighted([(w.cpu_mean, w.samples) for w in windows]),
        temperature_c=_weighted([(w.temp_mean_c, w.samples) for w in windows]),
        temperature_max_c=max(temps) if temps else None,
    )


class WindowHistory:
    """The ring of recent points per series; ``version`` grows with every point added."""

    def __init__(self, max_points: int = 240, max_series: int = 64) -> None:
        self.max_points = max_points
        self.max_series = max_series
        self._series: dict[SeriesKey, deque[Point]] = {}
        self.version = 0

    def on_windows(self, windows: Sequence[WindowStats], _now: float = 0.0) -> None:
        """The telemetry listener: group the batch by series and time slice, add one point each."""
        groups: dict[tuple[SeriesKey, float], list[WindowStats]] = {}
        for w in windows:
            key = (w.key.model_id, w.key.model_version, w.key.shadow)
            groups.setdefault((key, w.start), []).append(w)
        for (key, _start), group in sorted(groups.items(), key=lambda kv: kv[0][1]):
            self.add(key, merge(group))

    def add(self, key: SeriesKey, point: Point) -> None:
        ring = self._series.pop(key, None)  # re-inserted last: dict order is "heard from most lately"
        if ring is None:
            ring = deque(maxlen=self.max_points)
            while len(self._series) >= self.max_series:
                del self._series[next(iter(self._series))]
        ring.append(point)
        self._series[key] = ring
        self.version += 1

    def series(self, model_id: str, version: str, *, shadow: bool = False) -> tuple[Point, ...]:
        """The points of one model version, oldest first (empty if none is kept)."""
        return tuple(self._series.get((model_id, version, shadow), ()))

    def keys(self) -> list[SeriesKey]:
        """Every series kept, the one heard from most lately last."""
        return list(self._series)
