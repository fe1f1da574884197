"""One criterion's evidence over a rollout, as sums: what :mod:`gateway.core.gates.paired` adds to
window by window and :mod:`gateway.core.gates.criteria` judges."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.core.gates import levels as L


@dataclass(frozen=True)
class Stream:
    """One criterion's evidence over the rollout: sums over windows of (num, den) and of the
    counterfactual, and per device the weight of its level in the counterfactual."""

    n: float = 0.0
    d: float = 0.0
    nn: float = 0.0
    nd: float = 0.0
    dd: float = 0.0
    cf: float = 0.0  # the counterfactual's sum (what the devices would have shown on the baseline)
    windows: int = 0
    inferences: int = 0
    lever: Mapping[str, float] = field(default_factory=dict)
    # what changed for every device still on the baseline in the last window that had one, and
    # that window's start (:func:`gateway.core.gates.paired.take_windows`)
    shared: float | None = None
    shared_at: float = 0.0

    def add(self, num: float, den: float, cf: float, inferences: int, lever: Mapping[str, float]) -> Stream:
        merged = dict(self.lever)
        for dev, x in lever.items():
            merged[dev] = merged.get(dev, 0.0) + x
        return Stream(
            self.n + num,
            self.d + den,
            self.nn + num * num,
            self.nd + num * den,
            self.dd + den * den,
            self.cf + cf,
            self.windows + 1,
            self.inferences + inferences,
            merged,
            self.shared,
            self.shared_at,
        )

    @property
    def estimate(self) -> float | None:
        return self.n / self.d if self.d > 0 else None

    def variance(self, reference: L.Levels, metric: str, ratio: bool) -> float:
        """The estimate's variance: over windows (the sandwich), plus each device's level error."""
        if self.d <= 0 or self.windows < 2:
            return float("inf")
        theta = self.n / self.d
        w = self.windows
        resid = max(0.0, self.nn - 2 * theta * self.nd + theta * theta * self.dd)
        var = resid / (self.d * self.d) * w / (w - 1)
        for dev, lev in self.lever.items():
            level = reference.get(dev, {}).get(metric)
            if level is not None and lev:
                var += L.variance(level) * lev * lev / (self.d * self.d) * (theta * theta if ratio else 1.0)
        return var
