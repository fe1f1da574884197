"""Transfer rate and time left, from successive readings of bytes done (the status has no rate).

Each time the dashboard reads the status it gives :meth:`RateMeter.observe` the bytes mirrored so
far per artifact; the rate is taken over the readings of the last ``span_s`` seconds. A transfer
that starts again from fewer bytes (a restart) starts a new history. Bounded: only the artifacts of
the last reading are kept, each with a few readings. Pure: ``now`` is passed in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

MAX_READINGS = 32


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    rate_bytes_per_s: float | None
    eta_s: float | None


class RateMeter:
    def __init__(self, span_s: float = 30.0) -> None:
        self.span_s = span_s
        self._readings: dict[str, deque[tuple[float, int]]] = {}

    def observe(self, done: Mapping[str, tuple[int, int]], now: float) -> dict[str, Progress]:
        """``done``: artifact -> (bytes so far, total bytes). Returns each one's progress."""
        out: dict[str, Progress] = {}
        kept: dict[str, deque[tuple[float, int]]] = {}
        for key, (got, total) in done.items():
            ring = self._readings.get(key) or deque(maxlen=MAX_READINGS)
            if ring and got < ring[-1][1]:
                ring.clear()
            if not ring or now > ring[-1][0]:
                ring.append((now, got))
            while len(ring) > 2 and now - ring[1][0] >= self.span_s:
                ring.popleft()
            kept[key] = ring
            rate = None
            (t0, b0), (t1, b1) = ring[0], ring[-1]
            if t1 > t0 and b1 >= b0:
                rate = (b1 - b0) / (t1 - t0)
            eta = (total - got) / rate if rate and total > got else (0.0 if total and got >= total else None)
            out[key] = Progress(got, total, rate, eta)
        self._readings = kept
        return out
