"""The window history behind the dashboard's charts: merged per model version, bounded, in order."""

from __future__ import annotations

import math

from gateway.core.window import GroupKey, WindowStats
from gateway.telemetry.history import WindowHistory, merge


def window(
    version: str,
    start: float,
    *,
    cohort: str = "rev2",
    inferences: int = 100,
    errors: int = 1,
    p50: float | None = 40.0,
    p95: float | None = 80.0,
    cpu: float | None = 30.0,
    temp: float | None = 50.0,
    samples: int = 10,
    shadow: bool = False,
) -> WindowStats:
    return WindowStats(
        key=GroupKey("detector", version, cohort, shadow),
        start=start,
        end=start + 60,
        devices=2,
        samples=samples,
        inferences=inferences,
        errors=errors,
        error_rate=errors / inferences if inferences else None,
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        latency_p99_ms=None,
        cpu_mean=cpu,
        cpu_max=cpu,
        ram_mean=None,
        ram_max=None,
        temp_mean_c=temp,
        temp_max_c=temp,
    )


def test_cohorts_of_one_slice_merge_into_one_point_weighted_as_the_gates_weigh() -> None:
    p = merge(
        [
            window("1", 0, cohort="a", inferences=300, errors=3, p50=10, p95=20, cpu=10, samples=1),
            window(
                "1", 0, cohort="b", inferences=100, errors=5, p50=50, p95=100, cpu=50, samples=3, temp=None
            ),
        ]
    )
    assert (p.inferences, p.errors, p.devices, p.samples) == (400, 8, 4, 4)
    assert p.error_rate == 8 / 400
    assert p.latency_p50_ms == (10 * 300 + 50 * 100) / 400  # by inferences
    assert p.latency_p95_ms == (20 * 300 + 100 * 100) / 400
    assert p.cpu_percent == (10 * 1 + 50 * 3) / 4  # by reports
    assert p.temperature_c == 50.0 and p.temperature_max_c == 50.0  # the cohort without one is left out


def test_no_inferences_means_no_rate_and_missing_figures_stay_missing() -> None:
    p = merge([window("1", 0, inferences=0, errors=0, p50=None, p95=None, cpu=None, temp=None)])
    assert p.error_rate is None and p.latency_p50_ms is None and p.cpu_percent is None
    assert p.temperature_max_c is None


def test_one_point_per_version_and_slice_in_time_order_and_the_ring_is_bounded() -> None:
    h = WindowHistory(max_points=3)
    h.on_windows([window("2", 60), window("1", 0), window("1", 0, cohort="b"), window("1", 60)], 120.0)
    assert [p.start for p in h.series("detector", "1")] == [0, 60]
    assert len(h.series("detector", "2")) == 1
    for start in (120, 180, 240):
        h.on_windows([window("1", start)], start + 60)
    assert [p.start for p in h.series("detector", "1")] == [120, 180, 240]  # the oldest went first
    assert h.series("detector", "nope") == ()
    assert h.version == 6  # one per point added


def test_shadow_metrics_are_their_own_series() -> None:
    h = WindowHistory()
    h.on_windows([window("2", 0, shadow=True)])
    assert h.series("detector", "2") == () and len(h.series("detector", "2", shadow=True)) == 1


def test_at_most_max_series_the_one_heard_from_the_longest_ago_goes() -> None:
    h = WindowHistory(max_series=2)
    h.on_windows([window("1", 0)])
    h.on_windows([window("2", 0)])
    h.on_windows([window("1", 60)])  # 1 heard from again: 2 is now the oldest
    h.on_windows([window("3", 60)])
    assert h.keys() == [("detector", "1", False), ("detector", "3", False)]
    assert not math.isnan(h.series("detector", "1")[-1].latency_p95_ms or 0)
