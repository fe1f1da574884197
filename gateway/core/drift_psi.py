"""How far a window of a feature's values is from a baseline: the population stability index (PSI)
on ten bins cut at the baseline's deciles, over two drift sketches (:mod:`gateway.core.drift_sketch`).
Pure; :mod:`gateway.core.drift` judges windows with it.

``PSI = sum((w - b) * ln(w / b))`` over the bins' shares ``w`` (this window) and ``b`` (the
baseline). Why PSI and not Kolmogorov-Smirnov or Wasserstein:

- it is what ML monitoring tools alert on, with a scale people already read (under 0.1 stable,
  0.1 to 0.25 a moderate shift, over 0.25 a major one), the same whatever the feature's unit;
  Wasserstein is in the feature's own unit, so every feature would need its own threshold;
- KS's known null distribution assumes independent draws: a site's values are not (a device's
  frames are alike, devices differ, a site has a day and a night), and with the thousands of
  values of one window KS finds every harmless difference "significant". What is stable at a site
  is a *size* of change, and PSI measures a size;
- on bins cut at the baseline's deciles every bin has a tenth of the baseline, so a shift of any
  part of the distribution shows, and with the sketch's buckets the bins' counts are exact sums of
  whole buckets (:mod:`gateway.core.drift_sketch`). Shares are smoothed by half a count per bin,
  so an empty bin is finite.
"""

from __future__ import annotations

import math
from bisect import bisect_left

from gateway.core.drift_sketch import GAMMA, Cell, DriftSketch

BINS = 10


def _fold_alike(a: DriftSketch, b: DriftSketch) -> tuple[DriftSketch, DriftSketch]:
    width = max(a.zero_width, b.zero_width)
    if a.zero_width != width:
        a = a.copy()
        a._fold(width)
    if b.zero_width != width:
        b = b.copy()
        b._fold(width)
    return a, b


def cuts(base: DriftSketch, bins: int = BINS) -> list[Cell]:
    """The last cell of each of the baseline's quantile bins but the last (fewer where one cell
    holds more than a bin's share)."""
    total = base.count
    out: list[Cell] = []
    seen, q = 0, 1
    for cell, n in base.cells():
        seen += n
        while q < bins and seen * bins >= q * total:
            if not out or out[-1] != cell:
                out.append(cell)
            q += 1
    if out and seen and out[-1] == base.cells()[-1][0]:
        out.pop()  # the last bin is open to the right
    return out


def psi(base: DriftSketch, window: DriftSketch, bins: int = BINS) -> float:
    """The population stability index of ``window`` against ``base`` on the base's quantile bins."""
    base, window = _fold_alike(base, window)
    edges = cuts(base, bins)
    k = len(edges) + 1
    shares = []
    for sketch in (base, window):
        counts = [0] * k
        for cell, n in sketch.cells():
            counts[bisect_left(edges, cell)] += n
        total = sum(counts) + 0.5 * k
        shares.append([(c + 0.5) / total for c in counts])
    return sum((w - b) * math.log(w / b) for b, w in zip(shares[0], shares[1], strict=True))


def quantile(sketch: DriftSketch, q: float) -> float | None:
    """A bucket's geometric midpoint at rank ``q`` (0 for the zero band)."""
    total = sketch.count
    if not total:
        return None
    seen = 0
    for (sign, k), n in sketch.cells():
        seen += n
        if seen >= q * total:
            if sign == 0:
                return 0.0
            mid = GAMMA ** (abs(k) - 0.5)
            return sign * mid
    return None
