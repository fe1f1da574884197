"""A long transfer as a person follows it: percent, rate, time left, and when to say so again.

Pure: the caller passes the bytes done, the total, the smoothed rate (``core.pacing.Progress``
keeps it) and ``now``. :class:`ProgressLog` decides when a transfer deserves a log line (once it has
run ``interval_s``, then every ``interval_s``), so a short transfer stays silent and a long one
says where it is about every 10 s. What is logged where is the mirror's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.core.human import duration, rate, size


@dataclass(frozen=True)
class Estimate:
    done: int
    total: int
    rate_bps: float  # 0: not known yet

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the current rate; None while the rate is not known."""
        if self.rate_bps <= 0:
            return None
        return max(0, self.total - self.done) / self.rate_bps

    def to_json(self) -> dict[str, Any]:
        eta = self.eta_s
        return {
            "done_bytes": self.done,
            "total_bytes": self.total,
            "percent": round(self.percent, 1),
            "rate_bps": round(self.rate_bps),
            "eta_s": None if eta is None else round(eta),
        }

    def line(self) -> str:
        """``45% (13.5 MB of 30.0 MB) at 2.1 MB/s, about 8 s left``"""
        eta = self.eta_s
        tail = f" at {rate(self.rate_bps)}, about {duration(eta)} left" if eta is not None else ""
        return f"{self.percent:.0f}% ({size(self.done)} of {size(self.total)}){tail}"


@dataclass
class ProgressLog:
    """When to log each transfer's progress: after ``interval_s`` of it, then every ``interval_s``."""

    interval_s: float = 10.0
    _next: dict[str, float] = field(default_factory=dict)

    def report(self, key: str, done: int, total: int, rate_bps: float, now: float) -> str | None:
        """The line to log for transfer ``key`` now, or None (not due, or finished)."""
        due = self._next.setdefault(key, now + self.interval_s)
        if done >= total:
            self._next.pop(key, None)
            return None
        if now < due:
            return None
        self._next[key] = now + self.interval_s
        return f"fetching {key}: {Estimate(done, total, rate_bps).line()}"

    def forget(self, key: str) -> None:
        self._next.pop(key, None)
