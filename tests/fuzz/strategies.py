"""Hypothesis strategies for the fuzz tests: random junk, and mutations of valid examples.

Deep nesting is deliberately left out of the generated JSON: a depth limit for JSON bodies is
being added separately (issue 11, "Deeply nested JSON gets a 400"); everything else a document can
hold is here: dropped fields, wrong types, huge and non-finite numbers, lone surrogates, unicode.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from hypothesis import strategies as st

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
