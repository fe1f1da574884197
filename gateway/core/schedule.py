"""Uplink schedules (``mirror.schedule``): which transfer rate applies at ``now``, and until when.

A schedule is a list of time-of-day windows, each with its own rate, for example nights unlimited
and days at 1 MB/s::

    schedule = [
      { from = "12:00", to = "13:00", paused = true },          # listed first: it wins (see below)
      { from = "22:00", to = "06:00", bytes_per_s = 0 },        # 0: no cap (as bandwidth_bytes_per_s)
      { from = "06:00", to = "22:00", bytes_per_s = 1000000 },
    ]

The rules, all pure (values and ``now`` in, a :class:`Rate` out):

* A window covers ``from`` (inclusive) up to ``to`` (exclusive), in the site's local time of day
  (the shell passes the UTC offset of ``mirror.schedule_timezone``); ``to`` earlier than ``from``
  runs across midnight. ``from == to`` is refused (a whole day is simply the default rate).
* ``bytes_per_s = 0`` means no cap, as ``mirror.bandwidth_bytes_per_s = 0`` does; ``paused = true``
  means no transfer at all: the mirror holds its transfers at the next chunk and carries on from
  the same byte when the window ends. (A rate of 0 never means "stop": that would turn a forgotten
  number into a site that never updates.)
* Where windows overlap, the first one listed wins, as in a firewall's rule list. Outside every
  window ``mirror.bandwidth_bytes_per_s`` applies.
* Time is judged by the **trusted** clock (:mod:`gateway.trust.clock`): with an untrusted clock we
  cannot know which window we are in, so the most restrictive rate of the schedule applies
  (paused if any window pauses, else the smallest cap), and it is re-judged as soon as the clock is
  trusted. A wrong clock may slow transfers; it can never spend a day's data cap at night rates.

What it leaves to others: sleeping and the token bucket (:mod:`gateway.mirror.pace`, on
:class:`gateway.core.pacing.TokenBucket`), and reading the zone database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DAY_S = 86400
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])(?::([0-5][0-9]))?$")
KEYS = ("from", "to", "bytes_per_s", "paused")


class ScheduleSpecError(ValueError):
    """A bad window: ``where`` is the key inside the schedule (``[1].from``), ``expect`` what is valid."""

    def __init__(self, where: str, expect: str) -> None:
        self.where = where
        self.expect = expect
        super().__init__(f"{where}: expected {expect}")


@dataclass(frozen=True)
class Window:
    start_s: int  # seconds after local midnight, inclusive
    end_s: int  # exclusive; below start_s: the window runs across midnight
    bytes_per_s: int = 0  # 0: no cap
    paused: bool = False

    def covers(self, day_s: float) -> bool:
        if self.start_s < self.end_s:
            return self.start_s <= day_s < self.end_s
        return day_s >= self.start_s or day_s < self.end_s

    @property
    def label(self) -> str:
        return f"{_hhmm(self.start_s)}-{_hhmm(self.end_s)}"


@dataclass(frozen=True)
class Schedule:
    windows: tuple[Window, ...] = ()


@dataclass(frozen=True)
class Rate:
    bytes_per_s: int  # 0: no cap (meaningless when paused)
    paused: bool
    until: float | None  # POSIX time of the next edge where the rate may change; None: re-check
    why: str  # for the log and the status: which window (or rule) decided


def _hhmm(s: int) -> str:
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}" + (f":{s % 60:02d}" if s % 60 else "")


def _time_of_day(value: Any, where: str) -> int:
    m = _HHMM.match(value) if isinstance(value, str) else None
    if m is None:
        raise ScheduleSpecError(where, 'a time of day "HH:MM" or "HH:MM:SS" (00:00 to 23:59:59)')
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3) or 0)


def parse_schedule(entries: Sequence[Any]) -> Schedule:
    """TOML's list of tables -> a :class:`Schedule`; :class:`ScheduleSpecError` names the key."""
    if not isinstance(entries, list | tuple):
        raise ScheduleSpecError("", 'a list of tables like {from = "22:00", to = "06:00", bytes_per_s = 0}')
    windows = []
    for i, entry in enumerate(entries):
        at = f"[{i}]"
        if not isinstance(entry, Mapping):
            raise ScheduleSpecError(at, 'a table like {from = "22:00", to = "06:00", bytes_per_s = 0}')
        for key in entry:
            if key not in KEYS:
                raise ScheduleSpecError(f"{at}.{key}", "a known key (one of: " + ", ".join(KEYS) + ")")
        start = _time_of_day(entry.get("from"), f"{at}.from")
        end = _time_of_day(entry.get("to"), f"{at}.to")
        if start == end:
            raise ScheduleSpecError(
                f"{at}.to", "a time other than 'from' (outside every window the default rate applies)"
            )
        rate = entry.get("bytes_per_s", 0)
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 0:
            raise ScheduleSpecError(f"{at}.bytes_per_s", "a whole number of at least 0 (0: no cap)")
        paused = entry.get("paused", False)
        if not isinstance(paused, bool):
            raise ScheduleSpecError(f"{at}.paused", "true or false")
        windows.append(Window(start, end, rate, paused))
    return Schedule(tuple(windows))


def _restrictiveness(paused: bool, bytes_per_s: int) -> tuple[int, float]:
    """Smaller is more restrictive: paused, then the smallest cap, and no cap last."""
    return (0, 0.0) if paused else (1, float(bytes_per_s) if bytes_per_s > 0 else float("inf"))


def rate_at(
    schedule: Schedule, default_bytes_per_s: int, now: float, *, utc_offset_s: float, trusted: bool
) -> Rate:
    """The rate in effect at POSIX time ``now`` (local time is ``now + utc_offset_s``)."""
    if not schedule.windows:
        return Rate(default_bytes_per_s, False, None, "no schedule")
    if not trusted:
        options = [(w.paused, w.bytes_per_s) for w in schedule.windows] + [(False, default_bytes_per_s)]
        paused, bps = min(options, key=lambda o: _restrictiveness(*o))
        return Rate(bps, paused, None, "clock not trusted: the schedule's most restrictive rate")
    day_s = (now + utc_offset_s) % DAY_S
    # The next edge: the soonest window start or end after this instant (at most a day away).
    edges = {w.start_s for w in schedule.windows} | {w.end_s for w in schedule.windows}
    ahead = min((e - day_s) % DAY_S or DAY_S for e in edges)
    until = now + ahead
    for w in schedule.windows:
        if w.covers(day_s):
            return Rate(w.bytes_per_s, w.paused, until, f"window {w.label}")
    return Rate(default_bytes_per_s, False, until, "outside every window: mirror.bandwidth_bytes_per_s")
