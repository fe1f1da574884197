"""The drift sketch: exact merges, any real values, bounded size, and bad input refused."""

from __future__ import annotations

import json
import random

import pytest

from gateway.core.drift_sketch import (
    MAX_BUCKETS,
    MAX_FEATURES,
    DriftSketch,
    parse_drift,
    parse_sketch,
)
from gateway.core.errors import FormatError
from gateway.core.metrics import MAX_PAYLOAD_BYTES, parse_metrics


def _same(a: DriftSketch, b: DriftSketch) -> bool:
    return a.to_json() == b.to_json()


@pytest.mark.parametrize("seed", range(5))
def test_merge_of_parts_is_the_sketch_of_the_whole(seed: int) -> None:
    rng = random.Random(seed)
    values = [rng.gauss(rng.uniform(-5, 5), rng.uniform(0.1, 20)) for _ in range(3000)]
    whole = DriftSketch().extend(values)
    parts = [DriftSketch().extend(values[i::7]) for i in range(7)]
    merged = DriftSketch()
    for p in reversed(parts):
        merged.merge(p)
    assert merged.count == whole.count == 3000
    # folding near zero depends on order only through the widest band reached: fold both to it
    width = max(merged.zero_width, whole.zero_width)
    merged._fold(width)
    whole._fold(width)
    assert _same(merged, whole)


def test_negative_values_order_left_to_right() -> None:
    s = DriftSketch().extend([-100.0, -1.0, 0.0, 1.0, 100.0])
    cells = [c for c, _ in s.cells()]
    assert cells == sorted(cells) and len(cells) == 5
    assert cells[0] == (-1, -max(s.neg)) and cells[-1] == (1, max(s.pos))


@pytest.mark.parametrize("seed", range(3))
def test_bucket_cap_holds_for_any_spread(seed: int) -> None:
    rng = random.Random(seed)
    s = DriftSketch().extend(rng.choice((-1, 1)) * 10 ** rng.uniform(-8, 8) for _ in range(20_000))
    assert len(s.pos) + len(s.neg) <= MAX_BUCKETS
    assert s.count == 20_000
    assert parse_sketch(json.loads(json.dumps(s.to_json())), "x").to_json() == s.to_json()


def test_a_full_message_fits_the_payload_limit() -> None:
    rng = random.Random(1)
    drift = {}
    for i in range(MAX_FEATURES):
        s = DriftSketch().extend(rng.choice((-1, 1)) * 10 ** rng.uniform(-8, 8) for _ in range(5000))
        for store in (s.pos, s.neg):  # the largest counts a window could carry
            for k in store:
                store[k] = 10**9
        drift[f"feature_{i:02d}_with_a_longish_name"] = s.to_json()
    doc = {
        "device_id": "cam-1",
        "model_version": "1.0.0",
        "num_inferences": 10**9,
        "class_counts": {f"class_{i:02d}": 10**6 for i in range(8)},
        "drift": drift,
    }
    body = json.dumps(doc, separators=(",", ":")).encode()
    assert len(body) <= MAX_PAYLOAD_BYTES, len(body)
    sample = parse_metrics("cam-1", body, 0.0)
    assert set(sample.drift) == set(drift)


BAD = [
    ("not an object", [1, 2]),
    ("unknown field", {"pos": {}, "mean": 3}),
    ("negative count", {"pos": {"1": -1}}),
    ("float count", {"pos": {"1": 1.5}}),
    ("bool count", {"pos": {"1": True}}),
    ("huge count", {"pos": {"1": 10**10}}),
    ("bad key", {"pos": {"x": 1}}),
    ("key out of range", {"neg": {"99999": 1}}),
    ("store not object", {"pos": [1]}),
    ("negative zero width", {"zero_width": -1}),
    ("nan zero width", {"zero_width": float("nan")}),
    ("string zero", {"zero": "3"}),
    ("too many buckets", {"pos": {str(k): 1 for k in range(MAX_BUCKETS + 1)}}),
]


@pytest.mark.parametrize("why,sketch", BAD, ids=[b[0] for b in BAD])
def test_bad_sketches_are_format_errors(why: str, sketch: object) -> None:
    with pytest.raises(FormatError):
        parse_metrics("cam-1", {"model_version": "1", "drift": {"brightness": sketch}}, 0.0)


@pytest.mark.parametrize(
    "drift",
    [
        [],
        {"": {}},
        {"bad name!": {}},
        {"x" * 65: {}},
        {f"f{i}": {} for i in range(MAX_FEATURES + 1)},
    ],
)
def test_bad_feature_maps_are_format_errors(drift: object) -> None:
    with pytest.raises(FormatError):
        parse_drift(drift, "metrics")


def test_no_drift_is_an_empty_map() -> None:
    assert parse_metrics("cam-1", {"model_version": "1"}, 0.0).drift == {}
