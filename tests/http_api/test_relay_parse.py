"""The relay's batch parser (``gateway.http.relay.parse_batch``), which reads the records one at a
time, against the plain reading of the same bytes: ``json.loads`` and the record rules.

Generated batches, valid and broken, in any layout JSON allows (blanks anywhere, keys in any order,
other keys beside ``site`` and ``records``): the two agree on every one, value for value, and on
which are refused. Then the bounds: nesting, the record count, what is not JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import jsondoc
from gateway.core.errors import FormatError
from gateway.core.manifest import valid_id
from gateway.http.relay import MAX_KIND_CHARS, MAX_RECORDS, TooManyRecords, parse_batch


def reference(data: bytes) -> tuple[str, list[dict[str, Any]]] | None:
    """What the batch means read in one piece (None: refused)."""
    try:
        doc = jsondoc.loads(data, max_depth=jsondoc.MAX_DEPTH + 2)
    except FormatError:
        return None
    if not isinstance(doc, dict):
        return None
    site, records = doc.get("site"), doc.get("records")
    if not isinstance(site, str) or not valid_id(site) or not isinstance(records, list):
        return None
    out = []
    for rec in records:
        if not isinstance(rec, dict):
            return None
        seq, kind, at, body = rec.get("seq"), rec.get("kind"), rec.get("at"), rec.get("body")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
            return None
        if not isinstance(kind, str) or not kind or len(kind) > MAX_KIND_CHARS or not kind.isprintable():
            return None
        if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
            return None
        if not isinstance(body, dict):
            return None
        out.append({"site": site, "seq": seq, "kind": kind, "at": float(at), "body": body})
    return site, out


def ours(data: bytes) -> tuple[str, list[dict[str, Any]]] | None:
    try:
        return parse_batch(data)
    except FormatError:
        return None


leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False), st.text(max_size=8)
)
values = st.recursive(
    leaf,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
    max_leaves=8,
)
record = st.fixed_dictionaries(
    {"seq": st.one_of(st.integers(0, 10**9), values), "kind": st.one_of(st.sampled_from(["sample", "event", ""]), values),
     "at": st.one_of(st.floats(allow_nan=False), st.integers(), values), "body": st.one_of(st.dictionaries(st.text(max_size=4), values, max_size=3), values)},
    optional={"extra": values},
)  # fmt: skip
batch = st.fixed_dictionaries(
    {"site": st.one_of(st.sampled_from(["line-1", "a.b_c", "", "no space"]), values),
     "records": st.one_of(st.lists(record, max_size=6), values)},
    optional={"other": values, "more": values},
)  # fmt: skip


def layout(doc: Any, draw_indent: int | None, separators: tuple[str, str]) -> bytes:
    return json.dumps(doc, indent=draw_indent, separators=separators, ensure_ascii=False).encode()


@settings(max_examples=400, deadline=None)
@given(
    doc=batch,
    indent=st.one_of(st.none(), st.integers(0, 3)),
    seps=st.sampled_from([(",", ":"), (" , ", " : "), (",\n", ":\t")]),
)
def test_it_reads_every_batch_as_json_loads_does(doc: Any, indent: int | None, seps: tuple[str, str]) -> None:
    data = layout(doc, indent, seps)
    assert ours(data) == reference(data)


@settings(max_examples=300, deadline=None)
@given(doc=batch, cut=st.integers(0, 400), junk=st.sampled_from([b"", b"x", b"]", b"}", b",", b"{}", b" \n"]))
def test_broken_bytes_are_refused_alike(doc: Any, cut: int, junk: bytes) -> None:
    data = json.dumps(doc).encode()
    broken = data[: min(cut, len(data))] + junk
    assert ours(broken) == reference(broken)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"[1,2,3]", "expected a JSON object"),
        (b'{"site": "s", "records": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "nested deeper"),
        (b'{"site": "s", "records": [{"seq": 1, "kind": "k", "at": 1, "body": ' + b"[" * 40 + b"]" * 40 + b"}]}",
         "nested deeper"),
        (b'{"site": "s", "records": []} x', "extra data"),
        (b'{"site": "s", "records": [], }', "not JSON"),
        (b"\xff\xfe", "UTF-8"),
        (b'{1: 2}', "not JSON"),
        (b'{"site": "s", "records": 5}', "records: expected a list"),
    ],
)  # fmt: skip
def test_what_is_not_a_batch_is_named(data: bytes, why: str) -> None:
    with pytest.raises(FormatError, match=why):
        parse_batch(data)


def test_more_records_than_a_child_sends_are_refused_before_the_rest_is_read() -> None:
    one = b'{"seq":1,"kind":"x","at":0,"body":{}}'
    ok = b'{"site":"s","records":[' + b",".join([one] * MAX_RECORDS) + b"]}"
    assert len(parse_batch(ok)[1]) == MAX_RECORDS
    with pytest.raises(TooManyRecords, match=str(MAX_RECORDS)):
        parse_batch(b'{"site":"s","records":[' + b",".join([one] * (MAX_RECORDS + 1)) + b"]}")


def test_a_childs_largest_batch_is_within_the_bounds() -> None:
    """What a child's forwarder sends at most (records, bytes of bodies) always fits the relay."""
    from gateway.http.relay import MAX_BYTES
    from gateway.uplink.forwarder import BATCH_BYTES, BATCH_RECORDS

    assert BATCH_RECORDS <= MAX_RECORDS and BATCH_BYTES + BATCH_RECORDS * 200 <= MAX_BYTES
