"""The shadow agreement field of the metrics message: parsed, refused with a reason, summed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.core.agreement import (
    MAX_CLASS_NAME,
    MAX_CLASSES,
    MAX_PAIRS,
    Agreement,
    AgreementSums,
    top_pairs,
)
from gateway.core.errors import FormatError
from gateway.core.metrics import MAX_PAYLOAD_BYTES, parse_metrics
from gateway.core.window import DeviceWindow

AGREE = {
    "frames": 100,
    "agree": 90,
    "classes": {"person": [60, 58], "car": [40, 32]},
    "pairs": {"car->person": 8, "person->car": 2},
    "conf_diff_mean": -0.01,
}
BASE: dict[str, Any] = {"model_version": "2.0.0", "num_inferences": 100, "shadow": True}


def test_parsed_into_the_sample() -> None:
    s = parse_metrics("cam-1", json.dumps({**BASE, "agreement": AGREE}).encode(), 5.0)
    assert s.agreement is not None
    assert (s.agreement.frames, s.agreement.agree) == (100, 90)
    assert s.agreement.classes == {"person": (60, 58), "car": (40, 32)}
    assert s.agreement.pairs == {"car->person": 8, "person->car": 2}
    assert s.agreement.conf_diff_mean == pytest.approx(-0.01)
    assert parse_metrics("cam-1", BASE, 5.0).agreement is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"frames": -1}, "agreement.frames"),
        ({"frames": 1.5}, "agreement.frames"),
        ({"frames": True}, "agreement.frames"),
        ({"agree": 101}, "exceeds agreement.frames"),
        ({"classes": {"person": [60, 61]}}, "agreed (61) exceeds frames (60)"),
        ({"classes": {"person": [60]}}, "[frames, agreed]"),
        ({"classes": {"person": [101, 0]}}, "count more frames"),
        ({"classes": {"": [1, 1]}}, "bad class name"),
        ({"classes": {"a->b": [1, 1]}}, "bad class name"),
        ({"classes": {"x" * (MAX_CLASS_NAME + 1): [1, 1]}}, "bad class name"),
        ({"classes": {f"c{i}": [0, 0] for i in range(MAX_CLASSES + 1)}}, "at most"),
        ({"classes": [1, 2]}, "agreement.classes must be an object"),
        ({"pairs": {"person": 1}}, "'active->candidate'"),
        ({"pairs": {"person->person": 1}}, "'active->candidate'"),
        ({"pairs": {"a->b->c": 1}}, "'active->candidate'"),
        ({"pairs": {"person->car": 11}}, "more frames than disagreed"),
        ({"pairs": {"person->car": -1}}, "agreement.pairs.person->car"),
        ({"pairs": {f"a{i}->b": 0 for i in range(MAX_PAIRS + 1)}}, "at most"),
        ({"conf_diff_mean": 2}, "conf_diff_mean"),
        ({"conf_diff_mean": "x"}, "conf_diff_mean"),
    ],
)
def test_bad_values_are_refused_with_the_field(change: dict[str, Any], words: str) -> None:
    with pytest.raises(FormatError, match="metrics from cam-1") as exc:
        parse_metrics("cam-1", {**BASE, "agreement": {**AGREE, **change}}, 0.0)
    assert words in str(exc.value)


def test_refused_outside_shadow_and_when_not_an_object() -> None:
    with pytest.raises(FormatError, match="only in a shadow message"):
        parse_metrics("cam-1", {**BASE, "shadow": False, "agreement": AGREE}, 0.0)
    with pytest.raises(FormatError, match="agreement must be an object"):
        parse_metrics("cam-1", {**BASE, "agreement": [1]}, 0.0)


def test_the_largest_message_fits_the_payload_limit() -> None:
    name = "c" * (MAX_CLASS_NAME - 2)
    classes = {f"{name}{i:02d}": [10**8, 10**8] for i in range(MAX_CLASSES)}
    pairs = {f"{name}{i:02d}->{name}{i + 1:02d}": 0 for i in range(MAX_PAIRS)}
    counts = {f"{name}{i:02d}": 10**8 for i in range(MAX_CLASSES)}
    doc = {**BASE, "class_counts": counts, "mean_confidence": 0.5, "avg_latency_ms": 12.5}
    doc["agreement"] = {"frames": 10**9, "agree": 10**9, "classes": {}, "pairs": {}, "conf_diff_mean": -0.5}
    doc["agreement"]["classes"] = {k: [10**7, 10**7] for k in classes}
    doc["agreement"]["pairs"] = pairs
    body = json.dumps(doc, separators=(",", ":")).encode()
    assert len(body) <= MAX_PAYLOAD_BYTES, len(body)
    assert parse_metrics("cam-1", body, 0.0).agreement is not None


def test_a_window_sums_a_devices_messages() -> None:
    dw = DeviceWindow()
    for _ in range(3):
        a = parse_metrics("cam-1", {**BASE, "agreement": AGREE}, 0.0).agreement
        assert a is not None
        dw.add_agreement(a)
    assert dw.agreement is not None
    msg = dw.as_message("m", "2.0.0")["agreement"]
    assert msg["frames"] == 300 and msg["agree"] == 270
    assert msg["classes"] == {"person": [180, 174], "car": [120, 96]}
    assert msg["pairs"] == {"car->person": 24, "person->car": 6}
    assert msg["conf_diff_mean"] == pytest.approx(-0.01)
    # a window's own sums read back as one message of the same figures
    whole = dw.as_message("m", "2.0.0")
    assert whole["shadow"] is True  # a window's message with agreement is a shadow message
    again = parse_metrics("cam-1", whole, 0.0).agreement
    assert again is not None and again.frames == 300


def test_pairs_kept_are_bounded() -> None:
    sums = AgreementSums()

    for i in range(200):
        sums.add(Agreement(1, 0, {}, {f"a{i}->b": 1}))
    assert len(sums.pairs) == 64
    assert list(top_pairs({"a->b": 1, "c->d": 5, "e->f": 5}, 2)) == ["c->d", "e->f"]


def test_a_shadow_window_carries_its_devices_agreement_upstream() -> None:
    from gateway.core.aggregate import Aggregator

    agg = Aggregator(60.0, "hw")
    for dev in ("cam-1", "cam-2"):
        agg.add(parse_metrics(dev, {**BASE, "agreement": AGREE}, 10.0), {"hw": "rev1"})
        agg.add(parse_metrics(dev, {**BASE, "shadow": False, "model_version": "1.0.0"}, 10.0), {"hw": "rev1"})
    by_shadow = {w.key.shadow: w.to_json() for w in agg.close_due(60.0)}
    assert "agreement" not in by_shadow[False]
    up = by_shadow[True]["agreement"]
    assert (up["frames"], up["agree"]) == (200, 180)
    assert up["classes"] == {"person": [120, 116], "car": [80, 64]}
    assert up["pairs"] == {"car->person": 16, "person->car": 4}
    assert up["conf_diff_mean"] == pytest.approx(-0.01)
