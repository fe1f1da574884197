"""Transfer arithmetic (:mod:`gateway.core.pacing`): backoff bounds, jitter ranges, the Retry-After
hint by progress, the bandwidth cap and the smoothed rate. Pure: ``now`` and ``rand`` passed in."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.pacing import (
    Progress,
    TokenBucket,
    backoff_s,
    jittered,
    jittered_seconds_table,
    retry_after_s,
)

ALMOST_ONE = math.nextafter(1.0, 0.0)  # rand is uniform in [0, 1)

# -- backoff ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (8, 60.0), (10_000, 60.0)],
)
def test_backoff_doubles_up_to_the_maximum(attempt: int, ceiling: float) -> None:
    assert backoff_s(attempt, initial_s=0.5, max_s=60.0, rand=0.0) == 0.0  # full jitter: may be now
    assert backoff_s(attempt, initial_s=0.5, max_s=60.0, rand=0.5) == ceiling / 2
    assert math.isclose(backoff_s(attempt, initial_s=0.5, max_s=60.0, rand=ALMOST_ONE), ceiling)


@given(
    attempt=st.integers(0, 10_000),
    initial=st.floats(0.001, 100.0),
    maximum=st.floats(0.001, 10_000.0),
    rand=st.floats(0.0, 1.0, exclude_max=True),
)
def test_backoff_stays_within_zero_and_the_ceiling(
    attempt: int, initial: float, maximum: float, rand: float
) -> None:
    delay = backoff_s(attempt, initial_s=initial, max_s=maximum, rand=rand)
    assert 0.0 <= delay <= min(maximum, initial * 2 ** min(attempt, 30))


# -- jitter -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("interval", "jitter", "rand", "expected"),
    [
        (60.0, 0.1, 0.0, 54.0),  # the low end
        (60.0, 0.1, 0.5, 60.0),  # the middle
        (60.0, 0.0, 0.9, 60.0),  # no jitter: the interval itself
        (60.0, 2.0, 0.0, 0.0),  # a jitter above 1 never makes a negative wait
        (0.0, 0.5, 0.3, 0.0),
    ],
)
def test_jittered_table(interval: float, jitter: float, rand: float, expected: float) -> None:
    assert math.isclose(jittered(interval, jitter, rand), expected, abs_tol=1e-9)


@given(
    interval=st.floats(0.0, 86_400.0),
    jitter=st.floats(0.0, 1.0),
    rand=st.floats(0.0, 1.0, exclude_max=True),
)
def test_jittered_stays_within_the_spread(interval: float, jitter: float, rand: float) -> None:
    got = jittered(interval, jitter, rand)
    assert interval * (1 - jitter) - 1e-9 <= got <= interval * (1 + jitter) + 1e-9


def test_jitter_spreads_over_the_whole_range() -> None:
    got = [jittered(100.0, 0.2, i / 1000) for i in range(1000)]
    assert min(got) == 80.0
    assert max(got) > 119.9
    assert len({int(g) for g in got}) == 40  # every second of the spread is used


@given(
    interval=st.floats(0.0, 3_600.0),
    jitter=st.floats(0.0, 1.0),
    rand=st.floats(0.0, 1.0, exclude_max=True),
)
def test_the_seconds_table_agrees_with_rounding_jittered(interval: float, jitter: float, rand: float) -> None:
    """Slot ``i`` holds what a ``rand`` in that slot rounds to, to within the seconds one slot spans
    (plus one: the rounding may step inside it)."""
    table = jittered_seconds_table(interval, jitter, bits=8)
    exact = max(1, round(jittered(interval, jitter, rand)))
    assert abs(table[int(rand * 256)] - exact) <= 1 + 2 * interval * jitter / 256
    assert all(
        max(1, round(interval * (1 - jitter))) <= s <= max(1, round(interval * (1 + jitter))) for s in table
    )


def test_the_seconds_table_has_the_distribution_of_rounded_jitter() -> None:
    """300 s +/- 10 %: every whole second from 270 to 330 appears, each as often as a uniform
    ``rand`` rounds to it (the two end seconds half as often: half a second of spread each)."""
    table = jittered_seconds_table(300.0, 0.1)
    counts = Counter(table)
    assert sorted(counts) == list(range(270, 331))
    per_second = len(table) / 60
    assert all(abs(counts[s] - per_second) <= 1 for s in range(271, 330))
    assert abs(counts[270] - per_second / 2) <= 1 and abs(counts[330] - per_second / 2) <= 1
    assert table == tuple(sorted(table))  # slot i is the i-th quantile


# -- Retry-After by progress -------------------------------------------------------------------------


def progress(total: int, done: int, rate_bps: float) -> Progress:
    p = Progress(total)
    p.done, p.rate_bps = done, rate_bps
    return p


@pytest.mark.parametrize(
    ("p", "nth", "expected"),
    [
        (None, 0, 1),  # no transfer known: a short wait...
        (None, 4, 5),  # ...slotted over a few seconds
        (None, 5, 1),
        (progress(1000, 0, 0.0), 2, 3),  # no rate measured yet: the same
        (progress(0, 0, 100.0), 0, 1),  # no length known: the same
        (progress(10_000, 5_000, 1_000.0), 0, 5),  # 5 s left: never sooner
        (progress(10_000, 5_000, 1_000.0), 1, 6),  # spread over a 2 s window after the finish
        (progress(10_000, 5_000, 1_000.0), 2, 5),
        (progress(10_000, 5_500, 1_000.0), 0, 5),  # 4.5 s left: rounded up, never early
        (progress(100_000, 0, 1_000.0), 10, 110),  # 100 s left: a 25 s window...
        (progress(100_000, 0, 1_000.0), 24, 120),  # ...within the cap
        (progress(10_000, 9_990, 1_000.0), 0, 1),  # nearly done: the next second...
        (progress(10_000, 9_990, 1_000.0), 1, 2),  # ...and the one after, not all in one
        (progress(10_000, 10_000, 1_000.0), 0, 1),  # done: the floor
        (progress(10_000, 12_000, 1_000.0), 0, 1),  # more than the length: not negative
        (progress(10**9, 0, 1_000.0), 0, 120),  # a long transfer: the cap
    ],
)
def test_retry_after_follows_the_expected_finish(p: Progress | None, nth: int, expected: int) -> None:
    assert retry_after_s(p, nth) == expected


def test_retry_after_spreads_waiting_devices_evenly_after_the_finish() -> None:
    """Near the end of a fill, the devices told to wait come back over several seconds in equal
    numbers, not half of them in one second."""
    p = progress(50 << 20, 48 << 20, 10 << 20)  # 0.2 s left
    waits = [retry_after_s(p, n) for n in range(500)]
    assert min(waits) == 1
    per_second = {w: waits.count(w) for w in set(waits)}
    assert max(per_second.values()) <= len(waits) // 2
    p = progress(50 << 20, 0, 1 << 20)  # 50 s left: a 13 s window after it
    waits = [retry_after_s(p, n) for n in range(500)]
    assert min(waits) == 50
    assert max(waits) == 62
    assert max(waits.count(w) for w in set(waits)) <= 500 // 13 + 1


@given(
    total=st.integers(1, 10**10),
    done=st.integers(0, 10**10),
    rate=st.floats(1.0, 1e9),
    nth=st.integers(0, 10**6),
)
def test_retry_after_is_within_floor_and_cap_and_never_before_the_finish(
    total: int, done: int, rate: float, nth: int
) -> None:
    wait = retry_after_s(progress(total, done, rate), nth)
    assert 1 <= wait <= 120
    assert wait >= min(120, max(0, total - done) / rate)


# -- the bandwidth cap and the rate ------------------------------------------------------------------


def test_token_bucket_allows_one_second_of_burst_then_paces() -> None:
    assert TokenBucket(0).delay_for(10**9, now=0.0) == 0.0  # no cap
    bucket = TokenBucket(1000.0)
    assert bucket.delay_for(1000, now=0.0) == 0.0  # the burst
    assert bucket.delay_for(500, now=0.0) == 0.5  # then paced at the rate
    assert bucket.delay_for(500, now=0.5) == 0.5  # half a second refilled 500, the debt remains
    assert bucket.delay_for(0, now=100.0) == 0.0  # idle: refilled, but never past one second's worth
    assert bucket.tokens == 1000.0


def test_progress_rate_is_measured_over_half_a_second_and_smoothed() -> None:
    p = Progress(10_000)
    p.update(0, now=0.0)
    p.update(100, now=0.25)  # too soon to measure
    assert p.rate_bps == 0.0
    assert p.done == 100
    p.update(1000, now=1.0)
    assert p.rate_bps == 1000.0  # the first measurement is taken as it is
    p.update(3000, now=2.0)
    assert math.isclose(p.rate_bps, 0.7 * 1000.0 + 0.3 * 2000.0)
