"""Hypothesis strategies for the fuzz tests: random junk, and mutations of valid examples.

Deep nesting is deliberately left out of the generated JSON: a depth limit for JSON bodies is
being added separately (issue 11, "Deeply nested JSON gets a 400"); everything else a document can
hold is here: dropped fields, wrong types, huge and non-finite numbers, lone surrogates, unicode.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from email.utils import formatdate
from typing import Any

from hypothesis import strategies as st

from gateway.http.ranges import MAX_RANGES

HUGE = [10**400, -(10**400), 2**63, 2**64 + 1, -1, 0, 10**18, 1e308, -0.0, 5e-324]
ODD_STRINGS = [
    "",
    " ",
    "\x00",
    "\n",
    "1.0.0\n",
    "detector\n",
    "\ud800",
    "é",
    "١٢٣",
    "a" * 300,
    "NaN",
    "Infinity",
    "../../etc/passwd",
    "%00",
    "\u202e",
    "\t1",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=24),
    st.sampled_from(ODD_STRINGS),
)

# Shallow JSON-ish values: at most a few levels (see the module docstring on depth).
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def mutated(draw: st.DrawFn, valid: Mapping[str, Any], nested: Sequence[str] = ()) -> dict[str, Any]:
    """``valid`` with some fields dropped, replaced by junk or by odd values; extra keys added;
    the objects named in ``nested`` mutated the same way (one level)."""
    out = dict(valid)
    keys = sorted(valid)
    for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)) if keys else []:
        op = draw(st.sampled_from(["drop", "junk", "keep", "nested"]))
        if op == "drop":
            out.pop(key, None)
        elif op == "junk":
            out[key] = draw(junk)
        elif op == "nested" and key in nested and isinstance(valid[key], Mapping):
            out[key] = draw(mutated(valid[key]))
    if draw(st.booleans()):
        out.update(draw(st.dictionaries(st.text(max_size=8), junk, max_size=2)))
    return out


def to_json(doc: Any) -> bytes:
    """JSON as a careless (or hostile) sender writes it: NaN allowed, non-ASCII escaped."""
    return json.dumps(doc, allow_nan=True).encode()


@st.composite
def spliced(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A string from ``base`` with junk inserted, deleted or swapped at a random place."""
    text = draw(base)
    if not draw(st.booleans()):
        return text
    i = draw(st.integers(0, len(text)))
    j = draw(st.integers(i, min(len(text), i + 4)))
    return text[:i] + draw(st.text(max_size=4) | st.sampled_from(ODD_STRINGS)) + text[j:]


@st.composite
def spliced_bytes(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    data = draw(base)
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        i = draw(st.integers(0, len(data)))
        if op == "flip" and i < len(data):
            data = data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]
        elif op == "insert":
            data = data[:i] + draw(st.binary(min_size=1, max_size=4)) + data[i:]
        elif op == "delete":
            data = data[:i] + data[i + 1 :]
        else:
            data = data[:i]
    return data


# -- shared by the parser and the server fuzz tests -------------------------------------------

numbers = st.one_of(
    st.integers(0, 3000).map(str),
    st.integers(0, 3000).map(str),
    st.integers(0, 3000).map(str),
    st.integers(0, 10**30).map(str),
    st.text("0123456789", min_size=1, max_size=40),
    st.sampled_from(
        ["", " ", "١٢", "-1", "+5", "0x10", "1e3", "5\n", "½", "０", " 7 ", "00000000000000000000001"]
    ),
)
range_elems = st.one_of(
    st.tuples(numbers, numbers).map(lambda t: f"{t[0]}-{t[1]}"),
    st.tuples(st.integers(0, 3000), st.integers(0, 3000)).map(lambda t: f"{min(t)}-{max(t)}"),
    numbers.map(lambda n: f"{n}-"),
    numbers.map(lambda n: f"-{n}"),
    st.sampled_from(["", " ", "-", "--", "1--2", "1-2-3"]),
    st.text(max_size=6),
)
units = st.one_of(
    st.just("bytes"),
    st.sampled_from(["bytes", "Bytes", "BYTES", " bytes ", "bytes\t", "items", "", "byte", "bytes "]),
    st.text(max_size=6),
)
range_grammar = st.builds(
    lambda unit, sep, elems, comma: unit + sep + comma.join(elems),
    units,
    st.sampled_from(["=", "=", "=", "=", " =", "= ", ":", ""]),
    st.lists(range_elems, max_size=4) | st.lists(range_elems, max_size=MAX_RANGES + 3),
    st.sampled_from([",", ", ", " ,", ",,", ",\t"]),
)
range_headers = range_grammar | spliced(range_grammar)
sizes = st.one_of(st.integers(0, 5000), st.just(0), st.just(1), st.integers(0, 10**19))
TAG = "ab" * 16
MTIME = 1_790_000_000.0
dates = st.one_of(
    st.just(formatdate(MTIME, usegmt=True)),
    st.floats(-1e12, 1e12).map(lambda t: formatdate(t, usegmt=True) if -6e10 < t < 2.5e11 else "x"),
    st.sampled_from(
        [
            "Mon, 01 Jan 99999 00:00:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 +9999",
            "Sun, 06 Nov 0000 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "31 Dec 9999 23:59:59 -2359",
            "01 Jan 0001 00:00:00 +2359",
        ]
    ),
    st.text(max_size=30),
)
etag_values = st.one_of(
    st.just(f'"{TAG}"'),
    st.just(f'W/"{TAG}"'),
    st.just("*"),
    st.lists(st.sampled_from([f'"{TAG}"', '"x"', 'W/"y"', "junk", '""', "*"]), max_size=4).map(", ".join),
    st.text(max_size=20),
)
conditional_headers = st.fixed_dictionaries(
    {},
    optional={
        "Range": range_headers,
        "If-Range": etag_values | dates,
        "If-Match": etag_values,
        "If-None-Match": etag_values,
        "If-Modified-Since": dates,
        "If-Unmodified-Since": dates,
    },
)

query_keys = st.one_of(
    st.sampled_from(["fw", "hw", "model_id", "model_version", "wait", "region", "line", "fw\n", "a" * 65]),
    st.text(max_size=10),
)
query_values = st.one_of(
    st.sampled_from(["1.2.0", "rev2", "detector", "1.0.0", "1.0.0\n", "..", "a..b", "x" * 129, "", "\x00"]),
    st.text(max_size=40),
    st.text(max_size=200),
)


METRICS = {
    "device_id": "cam-1",
    "timestamp": "2026-11-25T10:00:00Z",
    "model_id": "detector",
    "model_version": "1.0.0",
    "avg_latency_ms": 42.0,
    "num_inferences": 100,
    "num_errors": 1,
    "error_rate": 0.01,
    "cpu_percent": 30.0,
    "ram_percent": 40.0,
    "uptime_seconds": 1000,
    "temperature_c": 50.5,
    "class_counts": {"person": 90, "forklift": 10},
    "mean_confidence": 0.9,
    "unknown_rate": 0.1,
    "shadow": False,
}
metrics_docs = mutated(METRICS, nested=("class_counts",))
metrics_payloads = st.one_of(
    metrics_docs,
    metrics_docs.map(to_json),
    spliced_bytes(metrics_docs.map(to_json)),
    st.binary(max_size=64),
    junk,
)


EVENT = {"event": "healthy", "model_id": "detector", "version": "1.0.0", "reason": "ok"}


def _s(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


CONNECT_BODY = (
    _s(b"MQTT") + bytes((4, 0xC2)) + (60).to_bytes(2, "big") + _s(b"cam-1") + _s(b"cam-1") + _s(b"tok")
)
SUBSCRIBE_BODY = (7).to_bytes(2, "big") + _s(b"devices/cam-1/updates") + b"\x01"
UNSUBSCRIBE_BODY = (7).to_bytes(2, "big") + _s(b"devices/cam-1/updates")
