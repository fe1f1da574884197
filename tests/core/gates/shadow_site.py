"""A site whose shadow devices report agreement on the same frames, for the shadow gate's tests.

:class:`ShadowFleet` is :class:`~tests.core.gates.helpers.Fleet` (unlike devices, a day/night swing,
every report through the real aggregator) whose shadow reports also carry ``agreement``: the frames
of the report are the active model's labels (its class counts), and the candidate's labels follow
:class:`Labels`. Agreement is overdispersed as at a real site: each device has its own level of
disagreement (a camera with a harder scene disagrees more), and each window moves it (a scene that
makes any two models disagree more for a while), so frames are not independent trials.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gateway.core.aggregate import Aggregator
from gateway.core.agreement import Agreement
from gateway.core.metrics import Sample
from gateway.core.window import WindowStats
from tests.core.gates.helpers import (
    BASELINE,
    CANDIDATE,
    REPORTS,
    WINDOW_S,
    Change,
    Fleet,
    Traits,
    same,
    sample,
)
from tests.rollout.sim import binomial


@dataclass(frozen=True)
class Labels:
    """How the candidate labels the active model's frames."""

    miss: float = 0.01  # mean share of frames labelled as another class at random (site-wide)
    spread: float = 0.5  # devices differ: a device's miss is ``miss * exp(N(0, spread))``, renormed
    window_sd: float = 0.4  # each window moves it: ``* exp(N(0, window_sd))``
    swap: tuple[str, str, float] | None = None  # (a, b, share of all frames), half each way
    relabel: tuple[str, str, float] | None = None  # (a, b, share of a's frames labelled b)


class ShadowFleet(Fleet):
    def __init__(
        self,
        traits: Mapping[str, Traits],
        seed: int,
        labels: Labels,
        *,
        swing_period_s: float = 0.0,
    ) -> None:
        super().__init__(traits, seed, swing_period_s=swing_period_s)
        self.labels = labels
        r = random.Random(seed * 104729 + 7)
        raw = {d: math.exp(r.gauss(0.0, labels.spread)) for d in traits}
        mean = sum(raw.values()) / len(raw)
        self.miss = {d: labels.miss * x / mean for d, x in raw.items()}  # site mean = labels.miss

    def center(self, devices: Iterable[str]) -> None:
        """The ``devices``' disagreement made to average ``labels.miss`` over their frames (the
        candidate exactly at the site's mean on the devices judged: a null at the margin)."""
        chosen = list(devices)
        weight = {d: self.traits[d].traffic for d in chosen}
        mean = sum(self.miss[d] * weight[d] for d in chosen) / sum(weight.values())
        if mean <= 0:
            return  # no random disagreement to center
        for d in chosen:
            self.miss[d] *= self.labels.miss / mean

    def window(
        self,
        start: float,
        on_candidate: Iterable[str] = (),
        change: Change = same,
        *,
        shadow: Iterable[str] = (),
        silent: Iterable[str] = (),
    ) -> list[WindowStats]:
        """As :meth:`Fleet.window`, the shadow reports with their agreement."""
        agg = Aggregator(WINDOW_S, "hw")
        cand, shad, quiet = set(on_candidate), set(shadow), set(silent)
        sd = self.labels.window_sd
        mood = {d: math.exp(self.rng.gauss(0.0, sd) - sd * sd / 2) for d in shad}  # mean 1
        for k in range(REPORTS):
            at = start + 1 + k * WINDOW_S / REPORTS
            s = self.swing(at)
            for dev, t in self.traits.items():
                if dev in quiet:
                    continue
                version = CANDIDATE if dev in cand else BASELINE
                agg.add(
                    sample(self.rng, dev, version, change(t) if dev in cand else t, at, swing=s),
                    {"hw": "rev1"},
                )
                if dev in shad:
                    shadowed = sample(self.rng, dev, CANDIDATE, change(t), at, swing=s, shadow=True)
                    agg.add(self._agreeing(shadowed, min(0.5, self.miss[dev] * mood[dev])), {"hw": "rev1"})
        return agg.close_due(start + WINDOW_S)

    def _agreeing(self, s: Sample, miss: float) -> Sample:
        """The report's frames labelled by the candidate: its class counts and its agreement."""
        r, lab = self.rng, self.labels
        active = dict(s.class_counts)
        total = sum(active.values())
        moved: dict[tuple[str, str], int] = {}
        for a, n in active.items():
            left = n
            if lab.swap is not None and a in lab.swap[:2]:
                b = lab.swap[1] if a == lab.swap[0] else lab.swap[0]
                share = lab.swap[2] / 2 / max(1e-9, _share(s, a))
                k = binomial(r, left, min(1.0, share))
                moved[(a, b)], left = moved.get((a, b), 0) + k, left - k
            if lab.relabel is not None and a == lab.relabel[0]:
                k = binomial(r, left, lab.relabel[2])
                key = (a, lab.relabel[1])
                moved[key], left = moved.get(key, 0) + k, left - k
            others = [c for c in active if c != a]
            if others:
                k = binomial(r, left, miss)
                for _ in range(k):
                    key = (a, r.choice(others))
                    moved[key] = moved.get(key, 0) + 1
        cand = dict(active)
        classes: dict[str, tuple[int, int]] = {}
        for a, n in active.items():
            out = sum(v for (x, _), v in moved.items() if x == a)
            classes[a] = (n, n - out)
        for (a, b), v in moved.items():
            cand[a] -= v
            cand[b] = cand.get(b, 0) + v
        pairs = {f"{a}->{b}": v for (a, b), v in moved.items() if v}
        agreement = Agreement(total, total - sum(moved.values()), classes, pairs, 0.0)
        return s._replace(class_counts=cand, agreement=agreement)


def _share(s: Sample, name: str) -> float:
    """The class's share of the device's frames (its traits; the swap keeps class shares even)."""
    total = sum(s.class_counts.values())
    return s.class_counts.get(name, 0) / total if total else 0.0
