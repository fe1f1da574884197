"""HTTP conditional and range request evaluation (RFC 9110 sections 13 and 14), as pure logic.

Values in, a :class:`Plan` out: which status to answer and which byte ranges to send. No I/O, so
every hostile header can be tested directly. Decisions where the RFC leaves a choice:

* A ``Range`` whose unit is not ``bytes`` is ignored (14.2: an origin server MUST ignore a unit it
  does not understand): 200 with the whole representation.
* A syntactically invalid ranges-specifier is ignored (14.2: MAY ignore or reject): 200. Numbers
  are ASCII digits only (``str.isdigit`` would accept other scripts' digits).
* Delta clients of the field ask for many ranges in one request: SWUpdate's zchunk handler up to
  150 (and it fails on anything but 206), Apache serves up to 200 (``MaxRanges``). So up to
  :data:`MAX_RANGES` (200) range-specs are served. The response stays bounded by three rules, each
  a case of 14.2's "MAY ignore or reject ... many small ranges or overlapping ranges" (the classic
  amplification attack), and each answers 200 with the whole file, never an error:

  1. more than :data:`MAX_RANGES` range-specs: ignored;
  2. more than :data:`MAX_OVERLAPS` (20, Apache's ``MaxRangeOverlaps``) satisfiable ranges that start
     before everything sorted ahead of them has ended: ignored;
  3. the satisfiable ranges are sorted and coalesced where they overlap or touch (15.3.7.2: "a
     server MAY coalesce any of the ranges that overlap ... regardless of the order"; a client
     reads each part's ``Content-Range``), so the bytes sent are at most the file's length; the
     whole 206 body, part headers included, must stay within :data:`MAX_BODY_FACTOR` (2) times the
     file, or the range set is ignored: a multipart answer that costs more than the file twice over
     is worse for both sides than the file.

  One range left means a plain 206, several mean ``multipart/byteranges`` (15.3.7.2, 14.6).
  Rule 3 needs the part header's size, so the shell passes ``part_head`` (the bytes one part
  header costs beside its Content-Range value; the closing delimiter is counted as one more).
* No satisfiable range at all: 416 with ``Content-Range: bytes */LENGTH`` (15.5.17).
* ``If-Range`` (13.1.5): an entity tag must match the strong ETag by strong comparison (a weak tag
  never matches); a date must equal ``Last-Modified`` exactly. Otherwise the Range is ignored and
  the whole new representation is sent, so a device resuming across a version change never splices
  two models.
* Preconditions in the order of 13.2.2: If-Match, If-Unmodified-Since, If-None-Match,
  If-Modified-Since, then If-Range.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

MAX_RANGES = 200
MAX_OVERLAPS = 20
MAX_BODY_FACTOR = 2
MAX_DIGITS = 18  # beyond 10**18 bytes nothing is satisfiable; also bounds int() work

_ASCII_DIGITS = re.compile(r"^[0-9]+$")
_ETAG = re.compile(r'^(W/)?"([\x21\x23-\x7e\x80-\xff]*)"$')


@dataclass(frozen=True)
class ByteRange:
    first: int  # inclusive
    last: int  # inclusive

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.first}-{self.last}/{size}"


@dataclass(frozen=True)
class Plan:
    status: int  # 200, 206, 304, 412 or 416
    ranges: tuple[ByteRange, ...] = ()  # for 206: one, or several for multipart/byteranges
    why: str = ""  # for logs and tests: which rule decided


def _number(text: str) -> int | None:
    text = text.strip(" \t")
    if not _ASCII_DIGITS.match(text):
        return None
    if len(text.lstrip("0")) > MAX_DIGITS:
        return 10**MAX_DIGITS
    return int(text)


def _range_spec(part: str, size: int) -> ByteRange | str | None:
    """One range-spec: its satisfiable range, None when it is valid but not satisfiable, or a
    string saying why the whole ``Range`` is ignored."""
    first_s, dash, last_s = part.strip(" \t").partition("-")
    if not dash:
        return "range without '-'"
    if first_s == "":
        suffix = _number(last_s)
        if suffix is None:
            return "bad suffix length"
        return ByteRange(max(0, size - suffix), size - 1) if suffix > 0 and size > 0 else None
    first = _number(first_s)
    if first is None:
        return "bad first-pos"
    if last_s.strip(" \t") == "":
        last = size - 1
    else:
        parsed = _number(last_s)
        if parsed is None:
            return "bad last-pos"
        if parsed < first:
            return "last-pos before first-pos"
        last = min(parsed, size - 1)
    return ByteRange(first, last) if first < size else None


def parse_byte_ranges(value: str, size: int) -> list[ByteRange] | str:
    """The satisfiable ranges of a ``Range`` value, or a string saying why it is ignored.

    An empty list means "valid but nothing satisfiable" (416).
    """
    unit, sep, spec = value.partition("=")
    if not sep or unit.strip(" \t").lower() != "bytes":
        return "not a bytes range"
    if "," not in spec:  # one range-spec (what resuming clients send): nothing to sort or merge
        if not spec.strip(" \t"):
            return "empty ranges-specifier"
        one = _range_spec(spec, size)
        return one if isinstance(one, str) else [] if one is None else [one]
    parts = [p for p in spec.split(",") if p.strip(" \t")]  # empty list elements are allowed (5.6.1)
    if not parts:
        return "empty ranges-specifier"
    if len(parts) > MAX_RANGES:
        return f"more than {MAX_RANGES} ranges"
    wanted: list[ByteRange] = []
    for part in parts:
        r = _range_spec(part, size)
        if isinstance(r, str):
            return r
        if r is not None:
            wanted.append(r)
    wanted.sort(key=lambda r: r.first)
    overlaps, reach = 0, -1
    for r in wanted:  # a range overlaps when it starts before everything earlier has ended
        overlaps += r.first <= reach
        reach = max(reach, r.last)
    if overlaps > MAX_OVERLAPS:
        return f"more than {MAX_OVERLAPS} overlapping ranges"
    merged: list[ByteRange] = []
    for r in wanted:
        if merged and r.first <= merged[-1].last + 1:
            merged[-1] = ByteRange(merged[-1].first, max(merged[-1].last, r.last))
        else:
            merged.append(r)
    return merged


def body_bytes(ranges: list[ByteRange] | tuple[ByteRange, ...], size: int, part_head: int) -> int:
    """The 206 body for these (coalesced) ranges: their bytes and, for several, each part's header
    (``part_head`` plus its Content-Range value) and the closing delimiter (at most ``part_head``)."""
    body = sum(r.length for r in ranges)
    if len(ranges) > 1:
        body += sum(part_head + len(r.content_range(size)) for r in ranges) + part_head
    return body


def _etags(value: str) -> list[tuple[bool, str]] | None:
    """``(weak, opaque)`` pairs of an If-Match/If-None-Match list; None for ``*``."""
    if value.strip() == "*":
        return None
    out = []
    for item in value.split(","):
        m = _ETAG.match(item.strip())
        if m:
            out.append((m.group(1) is not None, m.group(2)))
    return out


def _http_date(value: str) -> float | None:
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if dt is None or dt.tzinfo is None:
        return None
    return dt.timestamp()


def plan(
    method: str,
    headers: Mapping[str, str],
    *,
    size: int,
    etag: str,
    last_modified: float,
    part_head: int = 128,
) -> Plan:
    """Decide the answer for a GET or HEAD of a representation of ``size`` bytes.

    ``etag`` is the opaque strong tag without quotes; ``last_modified`` is POSIX seconds;
    ``part_head`` the bytes of one multipart part header beside its Content-Range value.
    """
    lm = int(last_modified)
    if (value := headers.get("If-Match")) is not None:
        tags = _etags(value)
        if tags is not None and not any(not weak and tag == etag for weak, tag in tags):
            return Plan(412, why="If-Match")
    elif (value := headers.get("If-Unmodified-Since")) is not None:
        when = _http_date(value)
        if when is not None and lm > when:
            return Plan(412, why="If-Unmodified-Since")
    if (value := headers.get("If-None-Match")) is not None:
        tags = _etags(value)
        if tags is None or any(tag == etag for _weak, tag in tags):  # weak comparison (13.1.2)
            return Plan(304, why="If-None-Match")
    elif (value := headers.get("If-Modified-Since")) is not None:
        when = _http_date(value)
        if when is not None and lm <= when:
            return Plan(304, why="If-Modified-Since")

    range_value = headers.get("Range")
    if range_value is None:
        return Plan(200, why="no Range")
    if (validator := headers.get("If-Range")) is not None:
        validator = validator.strip()
        m = _ETAG.match(validator)
        if m:
            if m.group(1) is not None or m.group(2) != etag:
                return Plan(200, why="If-Range tag does not match")
        elif _http_date(validator) != float(lm):
            return Plan(200, why="If-Range date does not match")
    ranges = parse_byte_ranges(range_value, size)
    if isinstance(ranges, str):
        return Plan(200, why=f"Range ignored: {ranges}")
    if not ranges:
        return Plan(416, why="no satisfiable range")
    if len(ranges) > 1 and body_bytes(ranges, size, part_head) > MAX_BODY_FACTOR * size:  # one: <= size
        return Plan(200, why=f"Range ignored: a 206 body over {MAX_BODY_FACTOR}x the file")
    return Plan(206, tuple(ranges), why="Range")
