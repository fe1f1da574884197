"""A device's sample, parsed (gateway.core.samples.offer)."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest

from gateway.core.errors import FormatError
from gateway.core.samples.offer import EMBEDDING, Limits, Reason, parse_offer

LIMITS = Limits(raw=True, max_bytes=64, max_embedding_dims=8)
BASE = {"reason": "low_confidence", "model_version": "2.0.0", "class": "car", "confidence": 0.2}


def test_an_embedding_is_float32_little_endian_and_named_by_its_hash() -> None:
    offer = parse_offer({**BASE, "embedding": [1, 0.5, -2]}, LIMITS)
    assert offer.content == struct.pack("<3f", 1, 0.5, -2) and offer.content_type == EMBEDDING
    assert offer.sha256 == hashlib.sha256(offer.content).hexdigest() and offer.kind == "embedding"
    assert offer.reason is Reason.LOW_CONFIDENCE and offer.label == "car" and offer.model_id == ""


def test_raw_input_is_decoded_and_bounded() -> None:
    offer = parse_offer(
        {**BASE, "raw": base64.b64encode(b"x" * 64).decode(), "content_type": "image/png"}, LIMITS
    )
    assert offer.content == b"x" * 64 and offer.kind == "raw" and offer.content_type == "image/png"
    with pytest.raises(FormatError, match="1 to 64 bytes"):
        parse_offer({**BASE, "raw": base64.b64encode(b"x" * 65).decode()}, LIMITS)
    with pytest.raises(FormatError, match=r"samples\.raw = false"):
        parse_offer({**BASE, "raw": "eA=="}, Limits(raw=False, max_bytes=64, max_embedding_dims=8))


def test_an_embedding_larger_than_max_bytes_is_refused() -> None:
    with pytest.raises(FormatError, match=r"samples\.max_bytes"):
        parse_offer({**BASE, "embedding": [1.0] * 8}, Limits(raw=False, max_bytes=16, max_embedding_dims=8))


@pytest.mark.parametrize("reason", [r.value for r in Reason])
def test_every_reason_parses(reason: str) -> None:
    assert parse_offer({**BASE, "reason": reason, "embedding": [0]}, LIMITS).reason == reason


def test_unknown_fields_are_ignored_not_passed_on() -> None:
    offer = parse_offer({**BASE, "embedding": [0], "device_id": "someone-else", "x": {"y": 1}}, LIMITS)
    assert not hasattr(offer, "device_id")
