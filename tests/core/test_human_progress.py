"""The pure pieces behind output for people: human figures, the progress estimate and its log
cadence, and the rate limit on repeated log lines."""

from __future__ import annotations

import pytest

from gateway.core.human import ago, duration, size, text, when
from gateway.core.progress import Estimate, ProgressLog
from gateway.core.repeats import RepeatLimit


@pytest.mark.parametrize(
    ("n", "out"),
    [
        (None, "-"),
        (0, "0 B"),
        (999, "999 B"),
        (1000, "1.0 kB"),
        (30_000_000, "30.0 MB"),
        (85_211_258_880, "85.2 GB"),
        (3 * 10**15, "3000.0 TB"),
    ],
)
def test_sizes(n: int | None, out: str) -> None:
    assert size(n) == out


@pytest.mark.parametrize(
    ("s", "out"),
    [
        (None, "-"),
        (0, "0 s"),
        (0.3, "0.3 s"),
        (45, "45 s"),
        (200, "3 min 20 s"),
        (900, "15 min"),
        (7500, "2 h 5 min"),
        (3600, "1 h"),
        (3 * 86400 + 4 * 3600, "3 d 4 h"),
    ],
)
def test_durations(s: float | None, out: str) -> None:
    assert duration(s) == out


def test_times_relative_to_now() -> None:
    now = 1_796_230_000.0
    assert ago(now - 180, now) == "3 min ago"
    assert ago(now + 2 * 86400, now) == "in 2 d"
    assert ago(now, now) == "just now"
    assert ago(None, now) == "-"
    assert when(now - 60, now).endswith("UTC (1 min ago)")
    assert text(None) == "-" and text(False) == "no" and text(True) == "yes" and text("") == "-"


def test_estimate() -> None:
    e = Estimate(done=13_500_000, total=30_000_000, rate_bps=2_000_000)
    assert e.percent == 45.0
    assert e.eta_s == 8.25
    assert e.line() == "45% (13.5 MB of 30.0 MB) at 2.0 MB/s, about 8.2 s left"
    assert e.to_json() == {"done_bytes": 13_500_000, "total_bytes": 30_000_000, "percent": 45.0,
                           "rate_bps": 2_000_000, "eta_s": 8}  # fmt: skip
    unknown = Estimate(done=0, total=100, rate_bps=0.0)
    assert unknown.eta_s is None and unknown.line() == "0% (0 B of 100 B)"
    assert Estimate(0, 0, 0.0).percent == 0.0


def test_progress_log_is_silent_for_a_short_transfer_then_every_interval() -> None:
    plog = ProgressLog(interval_s=10)
    assert plog.report("m@1", 0, 100, 0.0, now=0) is None
    assert plog.report("m@1", 10, 100, 1.0, now=9.9) is None
    line = plog.report("m@1", 20, 100, 2.0, now=10.0)
    assert line == "fetching m@1: 20% (20 B of 100 B) at 2 B/s, about 40 s left"
    assert plog.report("m@1", 30, 100, 2.0, now=15) is None
    assert plog.report("m@1", 40, 100, 2.0, now=20.5) is not None
    assert plog.report("m@1", 100, 100, 2.0, now=40) is None  # finished: the mirror says so itself
    assert plog.report("other", 1, 100, 1.0, now=40) is None  # each transfer has its own clock


def test_repeats_once_per_interval_with_the_count() -> None:
    limit = RepeatLimit(interval_s=60, max_keys=2)
    assert limit.admit("a", 0) == (True, 0)
    assert [limit.admit("a", t) for t in (1, 2, 59)] == [(False, 0)] * 3
    assert limit.admit("b", 5) == (True, 0)  # another line is not held back by the first
    assert limit.admit("a", 60) == (True, 3)
    assert limit.admit("a", 61) == (False, 0)
    assert limit.admit("c", 62) == (True, 0)
    assert limit.admit("b", 63) == (True, 0)  # forgotten past max_keys: said again
