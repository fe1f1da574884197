"""The clock floor as pure logic: when the clock is trusted, what an index's ``issued`` may do."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.trust.clock import (
    CLOCK_SKEW_S,
    ClockReading,
    FutureIssuedError,
    check_issued,
    floor_advice,
    floor_ahead_s,
    judge_clock,
    raised_floor,
    reference_time,
)

DAY = 86400.0
YEAR = 365 * DAY
MIN_VALID = 1_767_225_600.0  # 2026-01-01T00:00:00Z
NOW = MIN_VALID + 300 * DAY  # a correct clock, well past the build time
SKEW = DAY  # trust.max_future_skew_s


# (case, system clock, stored highest_issued, index issued,
#  expect trusted, expect refused, expect new highest_issued, expect capped)
# fmt: off
CASES = [
    ("normal index, correct clock", NOW, NOW - DAY, NOW - 60, True, False, NOW - 60, False),
    ("issued a little ahead, within skew", NOW, NOW - DAY, NOW + 3600, True, False, NOW + 3600, False),
    ("issued exactly at the skew", NOW, NOW - DAY, NOW + SKEW, True, False, NOW + SKEW, False),
    ("ten years ahead, correct clock: refused", NOW, NOW - DAY, NOW + 10 * YEAR, True, True, None, None),
    ("issued older than the floor: floor unchanged", NOW, NOW - 60, NOW - DAY, True, False, NOW - 60, False),
    ("index without issued", NOW, NOW - DAY, None, True, False, NOW - DAY, False),
    # A box that booted in 1970: its clock cannot judge `issued`, the index is taken on its
    # signature, version and expiry, and the floor moves forward by at most the skew per index.
    ("boot in 1970, first index from today", 0.0, 0.0, NOW, False, False, MIN_VALID + SKEW, True),
    ("boot in 1970, next index", 0.0, MIN_VALID + SKEW, NOW + 60, False, False, MIN_VALID + 2 * SKEW, True),
    ("boot in 1970, index near the floor", 0.0, 0.0, MIN_VALID + 60, False, False, MIN_VALID + 60, False),
    ("boot in 1970, ten years ahead: capped", 0.0, 0.0, NOW + 10 * YEAR, False, False, MIN_VALID + SKEW, True),
    # A floor poisoned before this fix (ten years ahead): the clock reads untrusted, an index is
    # judged at the floor (so a normal one reads as expired), and nothing raises the floor further.
    ("poisoned floor, normal index", NOW, NOW + 10 * YEAR, NOW, False, False, NOW + 10 * YEAR, False),
    # A sane clock behind the floor (untrusted): issued is not checked (the clock may be the one
    # that is wrong), but the floor cannot ratchet past the system clock plus the skew.
    ("clock behind the floor, ten years ahead", NOW, NOW + 3600, NOW + 10 * YEAR, False, False, NOW + SKEW, True),
    ("clock behind the floor, within skew", NOW, NOW + 3600, NOW + 7200, False, False, NOW + 7200, False),
    ("floor already at the cap: no ratchet", NOW, NOW + SKEW, NOW + 2 * SKEW, False, False, NOW + SKEW, True),
    ("clock a little behind the floor (within CLOCK_SKEW_S)", NOW - 100, NOW, NOW + 60, True, False, NOW + 60, False),
]
# fmt: on


@pytest.mark.parametrize(
    ("system", "highest", "issued", "trusted", "refused", "new", "capped"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_issued_and_floor(
    system: float,
    highest: float,
    issued: float | None,
    trusted: bool,
    refused: bool,
    new: float | None,
    capped: bool | None,
) -> None:
    reading = judge_clock(system, max(MIN_VALID, highest))
    assert reading.trusted is trusted
    if refused:
        with pytest.raises(FutureIssuedError) as err:
            check_issued("site index version 7", issued, reading, SKEW)
        text = str(err.value)
        assert "site index version 7" in text
        assert "trust.max_future_skew_s = 86400" in text
        assert "2036-" in text
        assert "2026-" in text  # names the issued time and the local clock
        return
    check_issued("site index", issued, reading, SKEW)
    got, was_capped = raised_floor(highest, issued, reading, SKEW, MIN_VALID)
    assert (got, was_capped) == (new, capped)
    # The invariant the design asks for: never down, never past the local time plus the skew
    # (the system clock once it is past min_valid_time, else the floor: a 1970 box moves forward).
    reference = system if system >= MIN_VALID else reading.now
    assert highest <= got <= max(highest, reference + SKEW)


def test_untrusted_clock_judged_at_the_floor() -> None:
    r = judge_clock(0.0, MIN_VALID)
    assert r == ClockReading(now=MIN_VALID, trusted=False, system=0.0, floor=MIN_VALID)
    assert judge_clock(MIN_VALID - CLOCK_SKEW_S, MIN_VALID).trusted


@pytest.mark.parametrize(
    ("system", "floor", "ahead", "says"),
    [
        (NOW, NOW, 0.0, None),  # trusted: nothing to say
        (0.0, MIN_VALID, None, "before trust.min_valid_time"),  # unset clock: not a floor problem
        (NOW, NOW + 10 * YEAR, 10 * YEAR, "reset-floor"),  # poisoned, or the clock is far behind
        (NOW, NOW + 3600, 3600.0, "behind the newest signed time"),  # a little behind: no reset advice
    ],
)
def test_advice(system: float, floor: float, ahead: float | None, says: str | None) -> None:
    r = judge_clock(system, floor)
    assert floor_ahead_s(r, MIN_VALID) == ahead
    advice = floor_advice(r, MIN_VALID, SKEW)
    assert (advice is None) if says is None else (advice is not None and says in advice)


def test_the_trust_boundary_is_the_floor_less_the_clock_skew() -> None:
    assert judge_clock(MIN_VALID - CLOCK_SKEW_S, MIN_VALID).trusted
    below = judge_clock(MIN_VALID - CLOCK_SKEW_S - 0.001, MIN_VALID)
    assert not below.trusted
    assert below.now == MIN_VALID  # an untrusted clock is read as the floor


@given(
    system=st.floats(0.0, MIN_VALID + 20 * YEAR),
    highest=st.floats(MIN_VALID, MIN_VALID + 20 * YEAR),
    issued=st.none() | st.floats(0.0, MIN_VALID + 40 * YEAR),
)
def test_the_floor_never_goes_down_nor_past_the_local_time_plus_the_skew(
    system: float, highest: float, issued: float | None
) -> None:
    reading = judge_clock(system, highest)
    try:
        check_issued("index", issued, reading, SKEW)
    except FutureIssuedError:
        assert reading.trusted  # only a trusted clock refuses...
        assert issued is not None
        assert issued > reading.now + SKEW  # ...and only what is past the skew
        return
    got, capped = raised_floor(highest, issued, reading, SKEW, MIN_VALID)
    assert got >= highest
    assert got <= max(highest, reference_time(reading, MIN_VALID) + SKEW)
    assert capped is (issued is not None and issued > highest and got != issued)
