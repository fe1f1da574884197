"""How far to trust the box's own clock, as pure logic.

An edge box without a real-time clock may boot in 1970, or be set by hand to anything. Expiry
checks (the freeze defence) and rollout windows both need "now". The rule:

* The *floor* is a time we know has passed: the configured ``trust.min_valid_time`` (set at build
  time), raised by the ``issued`` time of every signed index we accepted (the cloud's clock,
  signed, persisted). It never comes from our own clock, so a clock that ran ahead once cannot
  poison it.
* A reading at or above ``floor - skew`` is trusted and used as is.
* A reading below it is plainly wrong: "now" becomes the floor, and ``trusted`` is False. Expiry
  is then judged at the floor, so an index that expired before the newest one we ever saw is still
  refused; and the rollout logic offers no deployment that has a time window, so a wrong clock can
  never widen a window. The gateway keeps serving what it already verified, and says loudly in
  its log and status that the clock is wrong.
* A clock far *ahead* cannot be told from a long uplink outage; it makes every index look
  expired, which the gateway refuses (fail safe: no new update, last good state keeps serving),
  and the status names the clock as a likely cause.
"""

from __future__ import annotations

from dataclasses import dataclass

CLOCK_SKEW_S = 300.0


@dataclass(frozen=True)
class ClockReading:
    now: float
    trusted: bool
    system: float
    floor: float


def judge_clock(system_now: float, floor: float, skew_s: float = CLOCK_SKEW_S) -> ClockReading:
    if system_now >= floor - skew_s:
        return ClockReading(now=system_now, trusted=True, system=system_now, floor=floor)
    return ClockReading(now=floor, trusted=False, system=system_now, floor=floor)
