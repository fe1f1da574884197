"""The mirror's transfer pace: the bandwidth cap, taken from the uplink schedule at every chunk.

The decision (which rate applies now, and when the next window edge is) is
:func:`gateway.core.schedule.rate_at`, judged by the trusted clock; the bucket is
:class:`gateway.core.pacing.TokenBucket`. This shell only sleeps: never past a window edge (a wait
that would cross one is cut there and judged again, so a transfer speeds up, slows down or stops
at the edge itself), and while paused it re-checks at the edge or every :data:`RECHECK_S`, so a
clock that becomes trusted, or is set, is noticed. A transfer held by a pause keeps its place in the
partial file: if the upstream drops the idle connection meanwhile, the transfer resumes from the
same byte with ``Range`` once the window ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zoneinfo
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, tzinfo

from gateway.core.human import rate as human_rate
from gateway.core.pacing import TokenBucket
from gateway.core.schedule import Rate, rate_at
from gateway.core.settings import MirrorSettings
from gateway.trust.clock import ClockReading, judge_clock

log = logging.getLogger(__name__)

RECHECK_S = 30.0


def system_clock() -> ClockReading:
    """The system clock taken as trusted (a pacer without a trust state, as in unit tests)."""
    return judge_clock(time.time(), 0.0)


def zone(name: str) -> tzinfo | None:
    """``mirror.schedule_timezone`` as a tzinfo; None: the box's local zone."""
    if name == "local":
        return None
    return UTC if name == "UTC" else zoneinfo.ZoneInfo(name)


def utc_offset_s(now: float, tz: tzinfo | None) -> float:
    offset = datetime.fromtimestamp(now, tz).astimezone(tz).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0


class Pacer:
    """``await take(n)`` before passing on ``n`` bytes. ``reading`` is the trusted clock."""

    def __init__(
        self,
        settings: MirrorSettings,
        reading: Callable[[], ClockReading],
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.reading = reading
        self._sleep = sleep
        self._monotonic = monotonic
        self._tz = zone(settings.schedule_timezone)
        self.bucket = TokenBucket(float(settings.bandwidth_bytes_per_s))
        self._why = ""

    def rate(self) -> Rate:
        r = self.reading()
        rate = rate_at(
            self.settings.schedule,
            self.settings.bandwidth_bytes_per_s,
            r.now,
            utc_offset_s=utc_offset_s(r.now, self._tz),
            trusted=r.trusted,
        )
        if rate.why != self._why:
            self._why = rate.why
            shown = (
                "paused"
                if rate.paused
                else (f"{human_rate(rate.bytes_per_s)}" if rate.bytes_per_s else "no cap")
            )
            log.info("uplink schedule: %s (%s)", shown, rate.why)
        if not rate.paused and float(rate.bytes_per_s) != self.bucket.rate:
            self.bucket = TokenBucket(float(rate.bytes_per_s))  # a new window starts with a full second
        return rate

    async def take(self, nbytes: int) -> None:
        debt = float(nbytes)
        while True:
            rate = self.rate()
            to_edge = RECHECK_S if rate.until is None else max(0.0, rate.until - self.reading().now)
            if rate.paused:
                await self._sleep(min(to_edge, RECHECK_S) or 0.01)
                continue
            delay = self.bucket.delay_for(int(debt), self._monotonic())
            if delay <= to_edge or delay <= 0:
                if delay > 0:
                    await self._sleep(delay)
                return
            # The edge comes first: pay up to it at this rate, judge the rest at the next one.
            await self._sleep(to_edge or 0.01)
            debt = (delay - to_edge) * self.bucket.rate
            self.bucket.tokens += debt  # handed back: owed again under the next window's rate
