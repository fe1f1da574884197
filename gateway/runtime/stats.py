"""Named counters the components bump and the status page, dashboard, site report and /metrics read.

Plain counters are one name each (``mirror.bytes``). A few counters carry labels, for the
Prometheus exposition (``devices.poll_answers`` by answer and reason): :meth:`Stats.count`. Their
label values must come from a small fixed set (status codes, reason names), never from a device.
"""

from __future__ import annotations

from collections import Counter

Labels = tuple[tuple[str, str], ...]
LabelledKey = tuple[str, Labels]


class Stats:
    def __init__(self) -> None:
        self._c: Counter[str] = Counter()
        self._labelled: Counter[LabelledKey] = Counter()
        self.last_error: dict[str, str] = {}

    def inc(self, name: str, n: int = 1) -> None:
        self._c[name] += n

    @staticmethod
    def key(name: str, **labels: str) -> LabelledKey:
        """A labelled counter's key, for :meth:`bump` (a hot path builds it once)."""
        return name, tuple(sorted(labels.items()))

    def count(self, name: str, n: int = 1, **labels: str) -> None:
        """A labelled counter (label values from a small fixed set only)."""
        self._labelled[self.key(name, **labels)] += n

    def bump(self, key: LabelledKey, n: int = 1) -> None:
        self._labelled[key] += n

    def labelled(self, name: str) -> list[tuple[dict[str, str], int]]:
        """Every label set of the counter ``name`` with its count."""
        return [(dict(labels), n) for (key, labels), n in sorted(self._labelled.items()) if key == name]

    def error(self, name: str, message: str) -> None:
        self._c[name] += 1
        self.last_error[name] = message

    def __getitem__(self, name: str) -> int:
        return self._c[name]

    def snapshot(self) -> dict[str, int]:
        """Every plain counter, and each labelled counter's total under its name
        (``devices.poll_answers``: every poll answered)."""
        totals = Counter(self._c)
        for (name, _labels), n in self._labelled.items():
            totals[name] += n
        return dict(sorted(totals.items()))
