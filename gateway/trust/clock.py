"""How far to trust the box's own clock, and how far a signed index may move our idea of time.

An edge box without a real-time clock may boot in 1970, or be set by hand to anything. Expiry
checks (the freeze defence) and rollout windows both need "now". The rules, all pure (the system
clock is passed in as ``system_now``):

* The *floor* is a time we know has passed: the configured ``trust.min_valid_time`` (set at build
  time), raised by the ``issued`` time of the signed indexes we accepted (the cloud's clock,
  signed, persisted by :mod:`gateway.trust.state`).
* A reading at or above ``floor - CLOCK_SKEW_S`` is *trusted* and used as is.
* A reading below it is plainly wrong: "now" becomes the floor, and ``trusted`` is False. Expiry
  is then judged at the floor, so an index that expired before the newest one we ever saw is still
  refused; and the rollout logic offers no deployment that has a time window, so a wrong clock can
  never widen a window. The gateway keeps serving what it already verified, and says so.
* A clock far *ahead* cannot be told from a long uplink outage; it makes every index look
  expired, which the gateway refuses (fail safe: no new update, last good state keeps serving),
  and the status names the clock as a likely cause.

The floor must never run away (DESIGN.md, safety rules), because a floor in the future makes the
gateway call its correct clock wrong and refuse every normally issued index as expired, for good:

* **Refuse an index from the future.** With a trusted clock, an index whose ``issued`` lies more
  than ``trust.max_future_skew_s`` ahead of it is refused (:class:`FutureIssuedError`, naming the
  times); the last good index keeps serving. A cloud whose clock ran ahead gets its next, correct
  index accepted as usual (versions still only grow).
* **Cap every raise.** Accepting an index raises the floor to its ``issued``, but never past the
  *local reference time* plus ``max_future_skew_s``. The reference is the system clock whenever
  it is past ``min_valid_time`` (trusted, or merely behind the floor: a cap can only make the floor
  stricter about running ahead, so a clock that is behind is still good enough for it, and a run
  of indexes from the future cannot ratchet the floor up), else the floor itself (a clock in 1970
  says nothing; the floor is the newest time we know has passed).
* **A box that booted in 1970 still moves forward.** Its clock is not trusted, so ``issued`` cannot
  be checked against it and the index is accepted on its signature, version and expiry (judged at
  the floor) alone; the floor then rises by at most ``max_future_skew_s`` per accepted index. It
  never freezes: an index valid now expires after the floor, so it still verifies. The same holds
  for any untrusted clock: the future check needs a trusted one, so it is skipped, never guessed.
* **A floor poisoned before this rule existed is not lowered automatically.** A floor far ahead of
  a system clock that is past ``min_valid_time`` looks the same as a correct floor on a box whose
  clock fell behind (a dead RTC battery, a bad manual set): the floor is precisely what detects a
  clock that is behind. Lowering it on our own would trust that clock, widen rollout windows and
  let a stale index pass its expiry check, so the safe answer is to say so, loudly and precisely
  (:func:`floor_advice`, in the log at start and in ``trust status``), and let a person who checked
  the clock run ``ota-gateway trust reset-floor --why ...``, which is audited. Under the rules
  above an index can no longer put the floor more than ``max_future_skew_s`` ahead of a clock
  past ``min_valid_time``; a floor further ahead means that clock was set back (or the state file
  predates this release), which is exactly what a person should look at.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from gateway.core.errors import RemoteDataError
from gateway.core.manifest import format_time

CLOCK_SKEW_S = 300.0
DEFAULT_MAX_FUTURE_SKEW_S = 86400.0


class FloorKind(enum.StrEnum):
    """Where the stored clock floor came from."""

    MIN_VALID_TIME = "min_valid_time"  # nothing raised it above the configured build time
    INDEX = "index"  # the issued time of an accepted index (perhaps capped)
    RESET = "reset"  # an operator's audited ``trust reset-floor``
    UNKNOWN = "unknown"  # a state file from before the source was recorded


class FutureIssuedError(RemoteDataError):
    """A signed index issued further ahead of our trusted clock than ``trust.max_future_skew_s``."""

    def __init__(self, what: str, issued: float, local_now: float, max_future_skew_s: float) -> None:
        self.issued = issued
        self.local_now = local_now
        self.max_future_skew_s = max_future_skew_s
        super().__init__(
            f"{what}: issued {_iso(issued)}, {issued - local_now:.0f}s ahead of the trusted local clock "
            f"{_iso(local_now)} (trust.max_future_skew_s = {max_future_skew_s:.0f}); the cloud's clock "
            "is probably wrong"
        )


class ClockReading(NamedTuple):  # a tuple: read on every device poll, made cheaply
    now: float
    trusted: bool
    system: float
    floor: float


def judge_clock(system_now: float, floor: float, skew_s: float = CLOCK_SKEW_S) -> ClockReading:
    now, trusted = trusted_now(system_now, floor, skew_s)
    return ClockReading(now, trusted, system_now, floor)


def trusted_now(system_now: float, floor: float, skew_s: float = CLOCK_SKEW_S) -> tuple[float, bool]:
    """:func:`judge_clock`'s ``(now, trusted)`` alone (what every device poll needs)."""
    if system_now >= floor - skew_s:
        return system_now, True
    return floor, False


def check_issued(what: str, issued: float | None, reading: ClockReading, max_future_skew_s: float) -> None:
    """Refuse an ``issued`` too far ahead of a trusted clock; an untrusted clock cannot judge it."""
    if issued is not None and reading.trusted and issued > reading.now + max_future_skew_s:
        raise FutureIssuedError(what, issued, reading.now, max_future_skew_s)


def reference_time(reading: ClockReading, min_valid_time: float) -> float:
    """The local time a floor raise is capped against: the system clock once it is past
    ``min_valid_time`` (or trusted), else the floor."""
    if reading.trusted or reading.system >= min_valid_time:
        return reading.system
    return reading.floor


def raised_floor(
    highest_issued: float,
    issued: float | None,
    reading: ClockReading,
    max_future_skew_s: float,
    min_valid_time: float,
) -> tuple[float, bool]:
    """The stored floor after accepting an index issued at ``issued``, and whether it was capped.

    Never lower than before, never past :func:`reference_time` plus ``max_future_skew_s``.
    """
    if issued is None or issued <= highest_issued:
        return highest_issued, False
    cap = reference_time(reading, min_valid_time) + max_future_skew_s
    if issued > cap:
        return max(highest_issued, cap), True
    return issued, False


def floor_ahead_s(reading: ClockReading, min_valid_time: float) -> float | None:
    """How far the floor lies ahead of a system clock that is itself past ``min_valid_time``
    (a clock that is not, such as one in 1970, is simply unset and says nothing about the floor)."""
    if reading.system < min_valid_time:
        return None
    return reading.floor - reading.system


def floor_advice(reading: ClockReading, min_valid_time: float, max_future_skew_s: float) -> str | None:
    """One line for the log and the status when the clock is not trusted; None when it is."""
    if reading.trusted:
        return None
    ahead = floor_ahead_s(reading, min_valid_time)
    if ahead is None:
        return (
            f"system clock {_iso(reading.system)} is before trust.min_valid_time: judging expiry at the "
            f"floor {_iso(reading.floor)} until the clock is set (NTP) or a newer index moves the floor"
        )
    if ahead > max_future_skew_s:
        return (
            f"clock floor {_iso(reading.floor)} is {ahead:.0f}s ahead of the system clock "
            f"{_iso(reading.system)}: either the system clock is behind (fix it), or the floor was "
            "raised by an index from the future before this release; if the system clock is right, "
            "run: ota-gateway trust reset-floor --why '...'"
        )
    return (
        f"system clock {_iso(reading.system)} is {ahead:.0f}s behind the newest signed time seen "
        f"{_iso(reading.floor)}: judging expiry at the floor"
    )


def _iso(ts: float) -> str:
    try:
        return format_time(ts)
    except (OverflowError, OSError, ValueError):
        return f"{ts:.0f}"
