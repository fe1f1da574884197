"""RFC 9110 conditional and range evaluation, straight on the pure planner (hostile headers included)."""

from __future__ import annotations

from email.utils import formatdate

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.http.ranges import (
    MAX_BODY_FACTOR,
    MAX_OVERLAPS,
    MAX_RANGES,
    ByteRange,
    body_bytes,
    parse_byte_ranges,
    plan,
)

SIZE = 1000
TAG = "ab" * 32
MTIME = 1_790_000_000.0


def p(headers: dict[str, str], size: int = SIZE) -> tuple[int, list[tuple[int, int]]]:
    got = plan("GET", headers, size=size, etag=TAG, last_modified=MTIME)
    return got.status, [(r.first, r.last) for r in got.ranges]


def test_single_suffix_open_ended() -> None:
    assert p({"Range": "bytes=0-99"}) == (206, [(0, 99)])
    assert p({"Range": "bytes=-100"}) == (206, [(900, 999)])
    assert p({"Range": "bytes=900-"}) == (206, [(900, 999)])
    assert p({"Range": "bytes=990-5000"}) == (206, [(990, 999)])  # last-pos clamps
    assert p({"Range": "bytes=-5000"}) == (206, [(0, 999)])  # suffix longer than the file


def test_unsatisfiable_is_416_and_empty_suffix() -> None:
    assert p({"Range": "bytes=1000-"}) == (416, [])
    assert p({"Range": "bytes=5000-6000"}) == (416, [])
    assert p({"Range": "bytes=-0"}) == (416, [])
    assert p({"Range": "bytes=0-"}, size=0) == (416, [])


def test_unknown_unit_and_invalid_syntax_are_ignored() -> None:
    assert p({"Range": "items=0-1"}) == (200, [])
    assert p({"Range": "bytes 0-1"}) == (200, [])
    assert p({"Range": "bytes=5-1"}) == (200, [])
    assert p({"Range": "bytes=a-b"}) == (200, [])
    assert p({"Range": "bytes=0x10-20"}) == (200, [])
    assert p({"Range": "bytes=,"}) == (200, [])
    assert p({"Range": "bytes=\u0661-\u0662"}) == (200, [])  # Arabic-Indic digits are not DIGIT
    assert p({"Range": "bytes=+1-2"}) == (200, [])


def test_huge_numbers_are_bounded() -> None:
    assert p({"Range": "bytes=0-" + "9" * 5000}) == (206, [(0, 999)])
    assert p({"Range": "bytes=" + "9" * 5000 + "-"}) == (416, [])
    assert p({"Range": "bytes=-" + "9" * 5000}) == (206, [(0, 999)])


def test_many_or_overlapping_ranges_never_multiply_the_body() -> None:
    assert p({"Range": "bytes=" + ",".join(["0-999"] * 60)}) == (200, [])
    spread = ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(MAX_RANGES + 1))
    assert p({"Range": "bytes=" + spread}) == (200, [])
    assert p({"Range": "bytes=0-500,1-2,3-4,5-6"}) == (206, [(0, 500)])  # three overlaps: coalesced
    many = ",".join(["0-500"] + [f"{i}-{i}" for i in range(MAX_OVERLAPS + 1)])  # one overlap too many
    assert p({"Range": "bytes=" + many}) == (200, [])
    assert p({"Range": "bytes=" + ",".join(["0-0"] * (MAX_OVERLAPS + 1))}) == (206, [(0, 0)])
    assert p({"Range": "bytes=0-10,5-20"}) == (206, [(0, 20)])  # coalesced
    assert p({"Range": "bytes=0-9,10-19"}) == (206, [(0, 19)])  # adjacent coalesce too
    assert p({"Range": "bytes=500-509, 0-9"}) == (206, [(0, 9), (500, 509)])


def swupdate_like(size: int, chunk: int, count: int, seed: int = 14) -> list[tuple[int, int]]:
    """Whole zchunk-style chunks scattered over the file, in no particular order (SWUpdate sends
    at most 150 per request)."""
    import random

    starts = random.Random(seed).sample(range(0, size // chunk), count)
    return [(s * chunk, s * chunk + chunk - 1) for s in starts]


def test_swupdate_shaped_150_ranges_are_206_in_order() -> None:
    size, chunk = 10_000_000, 16_384
    wanted = swupdate_like(size, chunk, 150)
    status, got = p({"Range": "bytes=" + ",".join(f"{a}-{b}" for a, b in wanted)}, size=size)
    assert status == 206
    # Sorted and coalesced where chunks touch (RFC 9110 15.3.7.2): the same bytes, maybe fewer parts.
    assert {i for a, b in got for i in range(a, b + 1, chunk)} == {a for a, _ in wanted}
    assert sum(b - a + 1 for a, b in got) == 150 * chunk
    assert got == sorted(got)


def test_up_to_200_ranges_then_the_whole_file() -> None:
    size = 1_000_000
    spread = [f"{i * 4000}-{i * 4000 + 99}" for i in range(MAX_RANGES)]
    status, got = p({"Range": "bytes=" + ",".join(spread)}, size=size)
    assert (status, len(got)) == (206, MAX_RANGES)
    assert p({"Range": "bytes=" + ",".join([*spread, "999000-999001"])}, size=size) == (200, [])


def test_a_206_body_beyond_twice_the_file_is_the_whole_file() -> None:
    # 100 one-byte ranges of a 1000-byte file: ~100 part headers would be ~15x the file.
    assert p({"Range": "bytes=" + ",".join(f"{i * 10}-{i * 10}" for i in range(100))}) == (200, [])
    assert p({"Range": "bytes=0-0,500-500"}) == (206, [(0, 0), (500, 500)])  # small but bounded
    got = plan("GET", {"Range": "bytes=0-0,100-100"}, size=200, etag=TAG, last_modified=MTIME)
    assert got.status == 200  # two part headers are more than twice a 200-byte file


def test_conditionals() -> None:
    assert p({"If-None-Match": f'"{TAG}"'}) == (304, [])
    assert p({"If-None-Match": f'W/"{TAG}"'}) == (304, [])  # weak comparison for If-None-Match
    assert p({"If-None-Match": '"other", *'}) == (200, [])
    assert p({"If-None-Match": "*"}) == (304, [])
    assert p({"If-Match": '"other"'}) == (412, [])
    assert p({"If-Match": f'"{TAG}"', "Range": "bytes=0-0"}) == (206, [(0, 0)])
    assert p({"If-Modified-Since": formatdate(MTIME + 10, usegmt=True)}) == (304, [])
    assert p({"If-Modified-Since": formatdate(MTIME - 10, usegmt=True)}) == (200, [])
    assert p({"If-Unmodified-Since": formatdate(MTIME - 10, usegmt=True)}) == (412, [])


def test_if_range() -> None:
    rng = {"Range": "bytes=100-"}
    assert p({**rng, "If-Range": f'"{TAG}"'}) == (206, [(100, 999)])
    assert p({**rng, "If-Range": '"another-version"'}) == (200, [])  # never splice two models
    assert p({**rng, "If-Range": f'W/"{TAG}"'}) == (200, [])  # weak tags never match If-Range
    assert p({**rng, "If-Range": formatdate(MTIME, usegmt=True)}) == (206, [(100, 999)])
    assert p({**rng, "If-Range": formatdate(MTIME + 1, usegmt=True)}) == (200, [])
    assert p({**rng, "If-Range": "garbage"}) == (200, [])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.integers(min_value=0, max_value=10_000))
def test_any_range_header_gives_200_206_or_416_within_bounds(header: str, size: int) -> None:
    got = plan("GET", {"Range": header}, size=size, etag=TAG, last_modified=MTIME)
    assert got.status in (200, 206, 416)
    if got.status == 206:
        assert 1 <= len(got.ranges) <= MAX_RANGES
        assert sum(r.length for r in got.ranges) <= size  # coalesced: never more than the file
        assert body_bytes(got.ranges, size, 128) <= MAX_BODY_FACTOR * size
        assert all(0 <= r.first <= r.last < size for r in got.ranges)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 2000)), min_size=1, max_size=MAX_RANGES),
    st.integers(1, 1500),
)
def test_valid_ranges_cover_exactly_the_requested_bytes(pairs: list[tuple[int, int]], size: int) -> None:
    spec = "bytes=" + ",".join(f"{min(a, b)}-{max(a, b)}" for a, b in pairs)
    got = parse_byte_ranges(spec, size)
    if isinstance(got, str):
        return  # too many overlaps: ignored, the whole file goes out
    wanted = {i for a, b in pairs for i in range(min(a, b), min(max(a, b), size - 1) + 1)}
    assert {i for r in got for i in range(r.first, r.last + 1)} == wanted
    assert all(isinstance(r, ByteRange) for r in got)
