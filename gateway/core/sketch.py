"""A mergeable quantile sketch for latency, with bounded memory (DDSketch-style log buckets).

Values land in logarithmic buckets of ratio ``gamma = (1 + a) / (1 - a)``, so any quantile is
answered within relative error ``a`` (1% by default) of a true sample value, whatever the
distribution (Masson, Rim, Lee: "DDSketch", VLDB 2019). Merging two sketches adds their bucket
counts: exact, associative and commutative, which is what per-device and per-window aggregation
needs. Buckets are capped (``max_buckets``): past the cap the lowest buckets collapse together, which
only coarsens the low quantiles, never the p95/p99 the gates read.
"""

from __future__ import annotations

import math
from typing import Any


class LatencySketch:
    def __init__(self, relative_accuracy: float = 0.01, max_buckets: int = 2048) -> None:
        self.alpha = relative_accuracy
        self.gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self._log_gamma = math.log(self.gamma)
        self.max_buckets = max_buckets
        self.buckets: dict[int, int] = {}
        self.zeros = 0  # values at or below MIN_VALUE
        self.count = 0

    MIN_VALUE = 1e-3  # ms; below this a latency is reported as zero

    def add(self, value: float, n: int = 1) -> None:
        if n <= 0:
            return
        self.count += n
        if value <= self.MIN_VALUE:
            self.zeros += n
            return
        k = math.ceil(math.log(value) / self._log_gamma)
        self.buckets[k] = self.buckets.get(k, 0) + n
        if len(self.buckets) > self.max_buckets:
            self._collapse()

    def _collapse(self) -> None:
        keys = sorted(self.buckets)
        extra = len(keys) - self.max_buckets
        merged = sum(self.buckets.pop(k) for k in keys[: extra + 1])
        self.buckets[keys[extra]] = self.buckets.get(keys[extra], 0) + merged

    def merge(self, other: LatencySketch) -> None:
        if other.gamma != self.gamma:
            raise ValueError("sketches of different accuracy cannot be merged")
        self.count += other.count
        self.zeros += other.zeros
        for k, n in other.buckets.items():
            self.buckets[k] = self.buckets.get(k, 0) + n
        if len(self.buckets) > self.max_buckets:
            self._collapse()

    def quantile(self, q: float) -> float | None:
        if self.count == 0:
            return None
        rank = q * (self.count - 1)
        seen = self.zeros
        if rank < seen:
            return 0.0
        for k in sorted(self.buckets):
            seen += self.buckets[k]
            if seen > rank:
                return 2 * self.gamma**k / (self.gamma + 1)  # the bucket's midpoint in relative terms
        return 2 * self.gamma ** max(self.buckets) / (self.gamma + 1)

    def to_json(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "zeros": self.zeros,
            "buckets": {str(k): n for k, n in self.buckets.items()},
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LatencySketch:
        s = cls(float(doc["alpha"]))
        s.zeros = int(doc["zeros"])
        s.buckets = {int(k): int(n) for k, n in doc["buckets"].items()}
        s.count = s.zeros + sum(s.buckets.values())
        return s
