"""Named counters the components bump and the status page, dashboard and site report read."""

from __future__ import annotations

from collections import Counter


class Stats:
    def __init__(self) -> None:
        self._c: Counter[str] = Counter()
        self.last_error: dict[str, str] = {}

    def inc(self, name: str, n: int = 1) -> None:
        self._c[name] += n

    def error(self, name: str, message: str) -> None:
        self._c[name] += 1
        self.last_error[name] = message

    def __getitem__(self, name: str) -> int:
        return self._c[name]

    def snapshot(self) -> dict[str, int]:
        return dict(sorted(self._c.items()))
