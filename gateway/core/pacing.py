"""Pure arithmetic of transfers: a bandwidth cap, backoff with jitter, and the Retry-After hint.

No clock reads and no sleeping here: callers pass ``now`` and a random number, and act on the
delays returned (timers as values, the mitmproxy way), so the rules are tested exhaustively.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """Bytes per second with a one-second burst; ``rate <= 0`` means no cap."""

    rate: float
    tokens: float = 0.0
    last: float | None = None

    def delay_for(self, nbytes: int, now: float) -> float:
        """Take ``nbytes``; return how long to wait before sending them."""
        if self.rate <= 0:
            return 0.0
        if self.last is None:
            self.last = now
            self.tokens = self.rate
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= nbytes
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def backoff_s(attempt: int, *, initial_s: float, max_s: float, rand: float) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(max, initial * 2^attempt)]."""
    return rand * min(max_s, initial_s * (2 ** min(attempt, 30)))


def jittered(interval_s: float, jitter: float, rand: float) -> float:
    """``interval`` spread by +/- ``jitter`` (a fraction), ``rand`` uniform in [0, 1)."""
    return max(0.0, interval_s * (1.0 + jitter * (2.0 * rand - 1.0)))


def jittered_seconds_table(interval_s: float, jitter: float, bits: int = 12) -> tuple[int, ...]:
    """``max(1, round(jittered(...)))`` at the midpoints of ``2**bits`` equal slices of [0, 1):
    indexed by ``bits`` random bits, the whole seconds come out with the distribution of rounding
    ``jittered`` of a uniform ``rand``, to within one slice (a hot path draws bits, not floats)."""
    n = 1 << bits
    return tuple(max(1, round(jittered(interval_s, jitter, (i + 0.5) / n))) for i in range(n))


@dataclass
class Progress:
    """A transfer's progress and its smoothed rate, for the devices waiting on it."""

    total: int
    done: int = 0
    rate_bps: float = 0.0
    _last: float | None = field(default=None, repr=False)
    _last_done: int = field(default=0, repr=False)

    def update(self, done: int, now: float) -> None:
        if self._last is None:
            self._last, self._last_done = now, done
        elif now - self._last >= 0.5:
            inst = (done - self._last_done) / (now - self._last)
            self.rate_bps = inst if self.rate_bps == 0 else 0.7 * self.rate_bps + 0.3 * inst
            self._last, self._last_done = now, done
        self.done = done


def retry_after_s(progress: Progress | None, nth: int, *, floor_s: int = 1, cap_s: int = 120) -> int:
    """When the ``nth`` device told to wait for this artifact should come back.

    Never before the fill's expected finish (remaining bytes over the measured rate, rounded up: a
    device told to come back earlier only gets another 503), and spread evenly after it, device by
    device, over a window of a quarter of that time (at least 2 s): the returns are slotted, not
    left to chance, so they do not bunch up in the second the fill ends. With no rate known yet:
    the first few seconds, slotted the same way.
    """
    nth = max(0, nth)
    if progress is None or progress.rate_bps <= 0 or progress.total <= 0:
        return floor_s + nth % 5
    eta = math.ceil(max(0, progress.total - progress.done) / progress.rate_bps)
    window = max(2, math.ceil(eta / 4))
    return int(min(cap_s, max(floor_s, eta + nth % window)))
