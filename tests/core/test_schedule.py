"""Uplink schedules (:mod:`gateway.core.schedule`): which rate at ``now``, the next edge, across
midnight, overlaps, the untrusted clock, and bad specs naming their key. Pure: ``now`` passed in."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.errors import ConfigError
from gateway.core.schedule import DAY_S, Schedule, ScheduleSpecError, parse_schedule, rate_at
from gateway.service.settings import load

DAY0 = 1_790_000_000 - 1_790_000_000 % DAY_S  # a UTC midnight
NIGHTS_FREE_DAYS_1MB = [
    {"from": "12:00", "to": "13:00", "paused": True},
    {"from": "22:00", "to": "06:00", "bytes_per_s": 0},
    {"from": "06:00", "to": "22:00", "bytes_per_s": 1_000_000},
]


def at(hhmm: str, offset_s: float = 0) -> float:
    h, m = map(int, hhmm.split(":"))
    return DAY0 + h * 3600 + m * 60 - offset_s


@pytest.mark.parametrize(
    ("now", "bps", "paused", "next_edge", "why"),
    [
        ("23:30", 0, False, "06:00", "window 22:00-06:00"),  # across midnight, before it
        ("00:00", 0, False, "06:00", "window 22:00-06:00"),  # at midnight
        ("05:59", 0, False, "06:00", "window 22:00-06:00"),
        ("06:00", 1_000_000, False, "12:00", "window 06:00-22:00"),  # from is inclusive
        ("11:59", 1_000_000, False, "12:00", "window 06:00-22:00"),
        ("12:00", 0, True, "13:00", "window 12:00-13:00"),  # first listed wins the overlap
        ("13:00", 1_000_000, False, "22:00", "window 06:00-22:00"),  # to is exclusive
        ("22:00", 0, False, "06:00", "window 22:00-06:00"),
    ],
)
def test_table_of_a_day(now: str, bps: int, paused: bool, next_edge: str, why: str) -> None:
    got = rate_at(parse_schedule(NIGHTS_FREE_DAYS_1MB), 5000, at(now), utc_offset_s=0, trusted=True)
    assert (got.bytes_per_s, got.paused, got.why) == (bps, paused, why)
    edge = at(next_edge) + (DAY_S if at(next_edge) <= at(now) else 0)
    assert got.until == edge


def test_outside_every_window_the_default_cap_applies() -> None:
    sched = parse_schedule([{"from": "01:00", "to": "02:00", "paused": True}])
    got = rate_at(sched, 5000, at("03:00"), utc_offset_s=0, trusted=True)
    assert (got.bytes_per_s, got.paused, got.until) == (5000, False, at("01:00") + DAY_S)
    assert rate_at(Schedule(), 5000, at("03:00"), utc_offset_s=0, trusted=True).until is None


def test_local_time_is_the_offset_zone() -> None:
    # 22:30 in UTC+2 is 20:30 UTC: the night window of the site's own zone.
    sched = parse_schedule(NIGHTS_FREE_DAYS_1MB)
    got = rate_at(sched, 5000, at("22:30", offset_s=7200), utc_offset_s=7200, trusted=True)
    assert (got.bytes_per_s, got.why) == (0, "window 22:00-06:00")
    assert got.until == at("06:00", offset_s=7200) + DAY_S


@pytest.mark.parametrize(
    ("windows", "default", "expect"),
    [
        (NIGHTS_FREE_DAYS_1MB, 5000, (0, True)),  # a window pauses: paused
        (NIGHTS_FREE_DAYS_1MB[1:], 5000, (5000, False)),  # the smallest cap, the default's here
        (NIGHTS_FREE_DAYS_1MB[1:], 0, (1_000_000, False)),  # no default cap: the day's cap
        ([{"from": "22:00", "to": "06:00"}], 0, (0, False)),  # nothing caps: no cap
    ],
)
def test_an_untrusted_clock_gets_the_most_restrictive_rate(
    windows: list[dict[str, Any]], default: int, expect: tuple[int, bool]
) -> None:
    for now in (at("23:00"), at("09:00"), 0.0):
        got = rate_at(parse_schedule(windows), default, now, utc_offset_s=0, trusted=False)
        assert (got.bytes_per_s, got.paused, got.until) == (*expect, None)


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ([{"from": "22:00"}], "[0].to"),
        ([{"from": "24:00", "to": "06:00"}], "[0].from"),
        ([{"from": "7:00", "to": "08:00"}], "[0].from"),
        ([{"from": "07:00", "to": "07:00"}], "[0].to"),
        ([{"from": "07:00", "to": "08:00", "bytes_per_s": -1}], "[0].bytes_per_s"),
        ([{"from": "07:00", "to": "08:00", "bytes_per_s": 1.5}], "[0].bytes_per_s"),
        ([{"from": "07:00", "to": "08:00", "paused": "yes"}], "[0].paused"),
        ([{"from": "07:00", "to": "08:00"}, {"from": "07:00", "to": "08:00", "rate": 1}], "[1].rate"),
        (["22:00-06:00"], "[0]"),
    ],
)
def test_a_bad_spec_names_its_key(spec: list[Any], where: str) -> None:
    with pytest.raises(ScheduleSpecError) as err:
        parse_schedule(spec)
    assert err.value.where == where


def test_a_bad_schedule_stops_start_up_naming_file_and_key(tmp_path: Any) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[mirror]\nschedule = [{ from = "22:00", to = "06:00" }, { from = "6am", to = "22:00" }]\n'
    )
    with pytest.raises(ConfigError) as err:
        load(cfg, environ={})
    assert str(cfg) in str(err.value) and "mirror.schedule[1].from" in str(err.value)
    cfg.write_text('[mirror]\nschedule_timezone = "Mars/Olympus"\n')
    with pytest.raises(ConfigError) as err:
        load(cfg, environ={})
    assert "mirror.schedule_timezone" in str(err.value)
    cfg.write_text('[mirror]\nschedule = [{ from = "22:00", to = "06:00", paused = true }]\n')
    assert load(cfg, environ={}).mirror.schedule.windows[0].paused


@given(
    starts=st.lists(st.integers(0, 1439), min_size=1, max_size=5),
    lengths=st.lists(st.integers(1, 1439), min_size=5, max_size=5),
    t=st.floats(0, 3 * DAY_S),
)
def test_the_rate_holds_until_the_edge(starts: list[int], lengths: list[int], t: float) -> None:
    windows = [
        {"from": f"{s // 60:02d}:{s % 60:02d}", "to": f"{(s + n) % 1440 // 60:02d}:{(s + n) % 60:02d}",
         "bytes_per_s": 1000 * (i + 1)}
        for i, (s, n) in enumerate(zip(starts, lengths, strict=False))
    ]  # fmt: skip
    sched = parse_schedule(windows)
    now = DAY0 + t
    got = rate_at(sched, 7, now, utc_offset_s=0, trusted=True)
    assert got.until is not None and now < got.until <= now + DAY_S
    # Anywhere before the edge the same rate applies; at the edge, some window starts or ends.
    mid = now + (got.until - now) * 0.999
    assert rate_at(sched, 7, mid, utc_offset_s=0, trusted=True).bytes_per_s == got.bytes_per_s
    edges = {w.start_s for w in sched.windows} | {w.end_s for w in sched.windows}
    assert round(got.until - DAY0) % DAY_S in edges
