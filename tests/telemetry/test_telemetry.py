"""Metrics validation, the latency sketch and window aggregation, as pure logic."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.aggregate import Aggregator
from gateway.core.errors import FormatError
from gateway.core.metrics import parse_metrics
from gateway.core.sketch import LatencySketch
from gateway.runtime.health import probe

GOOD = {"model_version": "1.0.0", "model_id": "detector", "num_inferences": 100, "num_errors": 2,
        "avg_latency_ms": 40.0, "cpu_percent": 30.0, "ram_percent": 50.0, "temperature_c": 61.5,
        "class_counts": {"person": 97, "forklift": 3}, "mean_confidence": 0.8, "unknown_rate": 0.02}  # fmt: skip


def test_a_good_message_parses_and_the_device_clock_is_not_used() -> None:
    s = parse_metrics("cam-1", json.dumps({**GOOD, "timestamp": "1970-01-01T00:00:00Z"}).encode(), 1000.0)
    assert s.received_at == 1000.0
    assert s.inferences == 100
    assert s.class_counts == {"person": 97, "forklift": 3}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cpu_percent": "hot"}, "cpu_percent"),
        ({"ram_percent": float("nan")}, "ram_percent"),
        ({"avg_latency_ms": -1}, "avg_latency_ms"),
        ({"num_inferences": -5}, "num_inferences"),
        ({"num_errors": 500}, "num_errors"),
        ({"unknown_rate": 1.5}, "unknown_rate"),
        ({"mean_confidence": True}, "mean_confidence"),
        ({"class_counts": {"x": -1}}, "class_counts.x"),
        ({"class_counts": {str(i): 1 for i in range(100)}}, "class_counts"),
        ({"model_version": None}, "model_version"),
        ({"device_id": "cam-9"}, "device_id"),
        ({"shadow": "yes"}, "shadow"),
    ],
)
def test_each_bad_field_is_named_with_the_device(change: dict[str, Any], field: str) -> None:
    with pytest.raises(FormatError) as info:
        parse_metrics("cam-1", {**GOOD, **change}, 0.0)
    assert field in str(info.value)
    assert "cam-1" in str(info.value)


def test_bad_json_and_oversized_messages() -> None:
    with pytest.raises(FormatError, match="not JSON"):
        parse_metrics("cam-1", b"{nope", 0.0)
    with pytest.raises(FormatError, match="bytes"):
        parse_metrics("cam-1", b" " * 20_000, 0.0)
    with pytest.raises(FormatError, match="JSON object"):
        parse_metrics("cam-1", b"[1]", 0.0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.01, 1e5), min_size=1, max_size=300), st.sampled_from([0.5, 0.9, 0.99]))
def test_sketch_quantiles_are_within_the_relative_error(values: list[float], q: float) -> None:
    s = LatencySketch(0.01)
    for v in values:
        s.add(v)
    ordered = sorted(values)
    exact = ordered[int(q * (len(ordered) - 1))]
    got = s.quantile(q)
    assert got is not None
    assert abs(got - exact) <= 0.0101 * exact


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(0.01, 1e5), max_size=100), st.lists(st.floats(0.01, 1e5), max_size=100))
def test_sketch_merge_equals_adding_everything(a: list[float], b: list[float]) -> None:
    sa, sb, both = LatencySketch(), LatencySketch(), LatencySketch()
    for v in a:
        sa.add(v)
        both.add(v)
    for v in b:
        sb.add(v)
        both.add(v)
    sb.merge(sa)
    assert sb.buckets == both.buckets
    assert sb.count == both.count
    assert LatencySketch.from_json(both.to_json()).buckets == both.buckets


def test_sketch_memory_is_bounded() -> None:
    s = LatencySketch(0.01, max_buckets=100)
    for i in range(100_000):
        s.add(1.0001**i)
    assert len(s.buckets) <= 100
    assert s.count == 100_000
    assert s.quantile(0.99) is not None
    assert s.quantile(0.99) > s.quantile(0.5)  # type: ignore[operator]


def test_windows_are_aligned_per_group_and_figures_are_exact() -> None:
    agg = Aggregator(60.0, "hw")
    m = {**GOOD}
    agg.add(parse_metrics("a", m, 119.0), {"hw": "rev2"})
    agg.add(
        parse_metrics(
            "b",
            {**m, "cpu_percent": 50.0, "num_inferences": 300, "num_errors": 0, "mean_confidence": 0.6},
            61.0,
        ),
        {"hw": "rev2"},
    )
    agg.add(parse_metrics("c", m, 70.0), {"hw": "rev1"})
    agg.add(parse_metrics("a", {**m, "shadow": True, "model_version": "2.0.0"}, 80.0), {"hw": "rev2"})
    agg.add(parse_metrics("a", m, 120.0), {"hw": "rev2"})  # the next window
    assert agg.close_due(119.9) == []
    closed = {(w.key.cohort, w.key.model_version, w.key.shadow): w for w in agg.close_due(120.0)}
    assert set(closed) == {("rev2", "1.0.0", False), ("rev1", "1.0.0", False), ("rev2", "2.0.0", True)}
    w = closed[("rev2", "1.0.0", False)]
    assert (w.start, w.end, w.devices, w.samples, w.inferences, w.errors) == (60.0, 120.0, 2, 2, 400, 2)
    assert w.error_rate == 2 / 400
    assert w.cpu_mean == 40.0
    assert w.cpu_max == 50.0
    assert math.isclose(w.mean_confidence or 0, (0.8 * 100 + 0.6 * 300) / 400)
    assert w.class_counts == {"person": 194, "forklift": 6}
    assert w.class_shares["forklift"] == 6 / 200
    assert w.device_inferences == {"a": 100, "b": 300}
    assert w.latency_p50_ms is not None
    assert abs(w.latency_p50_ms - 40.0) <= 0.4
    assert [x.start for x in agg.close_due(180.0)] == [120.0]


def test_bounds_count_overflow() -> None:
    agg = Aggregator(60.0, "hw", max_groups=2, max_devices=3)
    for i in range(5):  # one group: three devices fit, two overflow
        agg.add(parse_metrics(f"d{i}", {**GOOD, "model_version": "1.0.0"}, 1.0), {"hw": "a"})
    agg.add(parse_metrics("f0", {**GOOD, "model_version": "1.0.0"}, 1.0), {"hw": "b"})  # a second group
    for i in range(4):  # a third group: no room, every report overflows
        agg.add(parse_metrics(f"e{i}", {**GOOD, "model_version": "1.0.0"}, 1.0), {"hw": "x"})
    assert agg.overflow == 2 + 4
    closed = {w.key.cohort: w for w in agg.close_due(60.0)}
    assert sorted(closed) == ["a", "b"]
    assert closed["a"].devices == 3
    assert closed["b"].devices == 1


def test_health_probe_reports_on_this_machine(tmp_path: Path) -> None:
    h = probe(tmp_path)
    assert h["disk_free_bytes"] > 0
    assert 0 <= h["ram_percent"] <= 100
    assert h["process_rss_bytes"] > 0
    assert "temperature_c" in h  # None on boards without a sensor
