"""One accumulator for windows and gates: :class:`gateway.core.figures.Figures`.

The aggregator adds samples into it; the gates merge closed windows into it. Splitting the same
reports over two windows and merging their figures must give the figures of one window of them all
(counts, classes, per-device inferences, maxima and means), and a window read back through
``Figures.of_window`` must give the window's own numbers.
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.aggregate import Aggregator
from gateway.core.figures import Figures
from gateway.core.metrics import Sample
from gateway.core.window import WindowStats

report = st.builds(
    lambda dev, n, err, cpu, ram, temp, conf, unk, cls: (dev, n, min(err, n), cpu, ram, temp, conf, unk, cls),
    st.sampled_from(["d1", "d2", "d3", "d4"]),
    st.integers(0, 500),
    st.integers(0, 20),
    st.floats(0, 100),
    st.floats(0, 100),
    st.floats(-20, 90),
    st.floats(0, 1),
    st.floats(0, 1),
    st.dictionaries(st.sampled_from(["person", "car", "spill"]), st.integers(0, 50), max_size=3),
)


def window(reports: list[tuple[Any, ...]], start: float) -> WindowStats:
    agg = Aggregator(window_s=60.0)
    for dev, n, err, cpu, ram, temp, conf, unk, cls in reports:
        agg.add(Sample(dev, start + 1, "m", "1", n, err, 40.0, cpu, ram, temp, cls, conf, unk), {"hw": "r1"})
    (w,) = agg.close_due(start + 60)
    return w


def close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, abs_tol=1e-6))


@settings(max_examples=200, deadline=None)
@given(st.lists(report, min_size=1, max_size=12), st.lists(report, min_size=1, max_size=12))
def test_merging_two_windows_gives_the_figures_of_one_window_of_every_report(
    first: list[tuple[Any, ...]],
    second: list[tuple[Any, ...]],
) -> None:
    merged = Figures().add_window(window(first, 0.0)).add_window(window(second, 60.0))
    whole = Figures.of_window(window(first + second, 0.0))
    for name in (
        "samples",
        "inferences",
        "errors",
        "classes",
        "per_device",
        "cpu_max",
        "ram_max",
        "temp_max",
    ):
        assert getattr(merged, name) == getattr(whole, name), name
    for name in ("error_rate", "cpu", "ram", "temp"):
        assert close(getattr(merged, name), getattr(whole, name)), name


@settings(max_examples=100, deadline=None)
@given(st.lists(report, min_size=1, max_size=12))
def test_a_window_read_back_gives_its_own_numbers(reports: list[tuple[Any, ...]]) -> None:
    w = window(reports, 0.0)
    f = Figures.of_window(w)
    assert (f.devices, f.samples, f.inferences) == (frozenset(w.device_inferences), w.samples, w.inferences)
    pairs = [
        (f.error_rate, w.error_rate),
        (f.cpu, w.cpu_mean),
        (f.ram, w.ram_mean),
        (f.temp, w.temp_mean_c),
        (f.confidence, w.mean_confidence),
        (f.unknown_rate, w.unknown_rate),
        (f.latency_p50, w.latency_p50_ms),
        (f.latency_p95, w.latency_p95_ms),
    ]
    assert all(close(a, b) for a, b in pairs), pairs
    assert f.merged(Figures()) == f == Figures().merged(f)
