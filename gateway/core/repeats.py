"""Repeated log lines, rate-limited: the same line again within an interval is held back and counted.

An unreachable uplink fails the same way on every retry; one line per interval, carrying the count
of those held back, says as much as a screenful. Pure: the caller gives a key (the line without
its changing figures) and ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RepeatLimit:
    interval_s: float = 60.0
    max_keys: int = 1000  # distinct lines remembered; the oldest is forgotten past this
    _seen: dict[str, tuple[float, int]] = field(default_factory=dict)  # key -> (last emitted, held)

    def admit(self, key: str, now: float) -> tuple[bool, int]:
        """Whether to emit this line now, and how many like it were held back since the last one."""
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval_s:
            self._seen[key] = (entry[0], entry[1] + 1)
            return False, 0
        self._seen.pop(key, None)
        self._seen[key] = (now, 0)
        while len(self._seen) > self.max_keys:
            del self._seen[next(iter(self._seen))]
        return True, entry[1] if entry is not None else 0
