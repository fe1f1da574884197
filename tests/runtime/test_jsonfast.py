"""The hot path's JSON (msgspec) gives what ``json`` gives, or steps aside for the core to answer."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import jsondoc
from gateway.core.errors import FormatError
from gateway.runtime import jsonfast
from tests.fuzz.strategies import junk, spliced_bytes, to_json

objects = st.dictionaries(st.text(max_size=8), junk, max_size=4)


def exact(value: Any) -> str:
    """A form that tells 1 from 1.0 and -0.0 from 0.0 (``==`` does not)."""
    return json.dumps(value, sort_keys=True, allow_nan=True)


def odd(value: Any) -> bool:
    """What msgspec reads otherwise than ``json``: a float that is not finite, a lone surrogate."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(odd(k) or odd(v) for k, v in value.items())
    if isinstance(value, list):
        return any(odd(v) for v in value)
    return False


@settings(max_examples=500)
@given(st.one_of(objects.map(to_json), junk.map(to_json), spliced_bytes(objects.map(to_json))))
def test_decode_object_is_jsons_value_or_steps_aside(data: bytes) -> None:
    fast = jsonfast.decode_object(data)
    try:
        slow = jsondoc.loads(data)
    except FormatError:
        assert fast is None  # refused by both: the core's words are the answer
        return
    if fast is None:  # stepped aside: only where msgspec would read it otherwise
        assert not isinstance(slow, dict) or odd(slow)
    else:
        assert exact(fast) == exact(slow)


def test_decode_object_steps_aside_for_what_json_reads_otherwise() -> None:
    for data in (
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": 1e999}',
        b'{"a": "\\ud800"}',
        b'{"a":' + b"[" * 40 + b"]" * 40 + b"}",
        b"null",
        b"[1]",
        b"{",
    ):
        assert jsonfast.decode_object(data) is None, data
    doc = jsonfast.decode_object(b'{"a": 1, "b": [1.0, -0.0, "\\u00e9", 12345678901234567890123]}')
    assert exact(doc) == exact({"a": 1, "b": [1.0, -0.0, "é", 12345678901234567890123]})


@settings(max_examples=500)
@given(junk)
def test_encode_sorted_is_json_dumps_json(value: Any) -> None:
    try:
        slow = json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return  # not JSON (NaN, Infinity): no record holds one (the parsers refuse them)
    text = jsonfast.encode_sorted(value)
    assert exact(json.loads(text)) == exact(json.loads(slow))
    if isinstance(value, dict):
        assert list(json.loads(text)) == sorted(value)


def test_encode_sorted_writes_a_lone_surrogate_as_json_does() -> None:
    assert jsonfast.encode_sorted({"b": 1, "a": "\ud800"}) == '{"a":"\\ud800","b":1}'
