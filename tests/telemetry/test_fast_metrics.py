"""The typed fast read of a metrics message accepts only what the core accepts, to the same sample,
and steps aside for everything else (the core then answers in its words)."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.errors import FormatError
from gateway.core.metrics import MAX_CLASS_NAME, MAX_CLASSES, MAX_COUNT, RANGES, encode, parse_metrics
from gateway.telemetry.fast_metrics import read_sample
from tests.core.test_metrics_message import message
from tests.fuzz.strategies import HUGE, ODD_STRINGS, junk, mutated, spliced_bytes, to_json

DEVICE = "cam-7"
NOW = 1_700_000_000.5
VALID = {
    "device_id": DEVICE,
    "timestamp": 1.7e9,
    "model_id": "detector",
    "model_version": "1.0.0",
    "num_inferences": 100,
    "num_errors": 1,
    "error_rate": 0.01,
    "cpu_percent": 30.0,
    "ram_percent": 40,
    "temperature_c": 50.5,
    "mean_confidence": 0.8,
    "unknown_rate": 0.1,
    "avg_latency_ms": 40.0,
    "uptime_seconds": 1000,
    "class_counts": {"person": 90, "forklift": 10},
    "drift": {"pc1": {"pos": {"3": 2}, "neg": {"1": 1}}},
    "agreement": {"frames": 100, "agree": 93, "classes": {"person": [60, 57]}, "pairs": {"person->car": 3}},
    "shadow": True,
}


def core(data: bytes, model_id: str | None) -> Any:
    try:
        return parse_metrics(DEVICE, data, NOW, model_id=model_id)
    except FormatError:
        return None


def agree(data: bytes, model_id: str | None = "detector") -> Any:
    """The fast read is the core's sample, exactly (``repr`` tells 1 from 1.0), or None."""
    fast = read_sample(DEVICE, data, NOW, model_id)
    if fast is not None:
        slow = core(data, model_id)
        assert slow is not None, f"the fast read accepted what the core refuses: {data[:300]!r}"
        assert repr(fast) == repr(slow), data[:300]
    return fast


@pytest.mark.parametrize("seed", range(4))
def test_every_valid_message_is_read_fast_to_the_cores_sample(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        data = json.dumps(encode(message(rng, DEVICE))).encode()
        for model_id in ("detector", None, ""):
            assert agree(data, model_id) is not None, data


@settings(max_examples=1500)
@given(
    st.one_of(
        mutated(VALID, nested=("class_counts", "drift", "agreement")).map(to_json),
        spliced_bytes(mutated(VALID).map(to_json)),
        junk.map(to_json),
    ),
    st.sampled_from(["detector", None, "", "bad..id", "x\n"]),
)
def test_random_messages_are_the_cores_or_step_aside(data: bytes, model_id: str | None) -> None:
    agree(data, model_id)


EDGES: list[Any] = [
    *HUGE, *ODD_STRINGS, None, True, False, 0, -0, 1, 1.0, -1, 0.5, MAX_COUNT, MAX_COUNT + 1, 1e12,
    [], {}, [1], {"a": 1}, "1", 2**53 + 1, float(2**53 + 1), 1e-320,
]  # fmt: skip


@pytest.mark.parametrize("field", sorted(VALID))
def test_each_field_at_its_edges(field: str) -> None:
    values = list(EDGES)
    low, high = RANGES.get(field, (0, MAX_COUNT))  # the core's, which the fast read takes too
    values += [low, high, low - 1e-9, high * (1 + 1e-12), -low, int(low)]
    for value in values:
        for base in (VALID, {**VALID, "shadow": False, "agreement": None}):
            agree(json.dumps({**base, field: value}, allow_nan=True).encode())
            agree(json.dumps({k: v for k, v in base.items() if k != field}).encode())


def test_ids_and_names_at_their_edges() -> None:
    ids = ["a", "a" * 128, "a" * 129, "a..b", "a.b", ".a", "a\n", "\n", "", "é", "a b", "A-_.9"]
    for value in ids:
        for field in ("model_id", "model_version", "device_id"):
            agree(json.dumps({**VALID, field: value}).encode())
        for model_id in (value, None):
            agree(json.dumps({k: v for k, v in VALID.items() if k != "model_id"}).encode(), model_id)
    names = ["", "a", "a" * MAX_CLASS_NAME, "a" * (MAX_CLASS_NAME + 1), "é" * MAX_CLASS_NAME, "é" * 65]
    for name in names:
        agree(json.dumps({**VALID, "class_counts": {name: 1}}).encode())
    many = {f"c{i}": i for i in range(MAX_CLASSES + 1)}
    assert agree(json.dumps({**VALID, "class_counts": many}).encode()) is None
    less = dict(list(many.items())[:MAX_CLASSES])
    assert agree(json.dumps({**VALID, "class_counts": less}).encode()) is not None


def test_repeated_keys_deep_nesting_and_odd_json() -> None:
    body = json.dumps(VALID)[1:-1]
    for before, after in (
        ('"cpu_percent": 1', '"cpu_percent": 2'),
        ("", '"cpu_percent": 200'),
        ("", '"model_version": "2.0"'),
        ("", '"model_version": 5'),
        ('"model_version": 5', ""),
        ("", '"extra": ' + "[" * 40 + "]" * 40),
        ("", '"extra": ' + "[" * 10 + "]" * 10),
        ("", '"cpu_percent": NaN'),
        ("", '"extra": NaN'),
        ("", '"cpu_percent": 1e999'),
        ("", '"class_counts": 0'),
        ("", '"class_counts": false'),
        ("", '"extra": "\\ud800"'),
        ("", '"\udce4xtra": 1'),  # a byte that is not UTF-8
        ("", '"timestamp": "2026-12-07T01:00:00Z"'),
        ("", '"timestamp": "' + "x" * 65 + '"'),
        ("", '"timestamp": 1e18'),
    ):
        text = "{" + ", ".join(part for part in (before, body, after) if part) + "}"
        agree(text.encode("utf-8", "surrogateescape"))
    # the common message is read fast, timestamp and all
    assert agree(json.dumps({**VALID, "timestamp": "2026-12-07T01:00:00Z"}).encode()) is not None
