"""A simulated site day of samples, through the pure budget only (no I/O): the story of issue 26
("a day of 200 devices offering 10x the budget"), shared by the test and ``tests/bench/samples_day.py``.

Devices differ: each has its own rate (log-normal, so a few cameras offer far more than most) and
one noisy camera offers a fifth of everything. Reasons are drawn per offer from :data:`MIX`, sizes
between 1 and 8 KiB (embeddings and thumbnails), classes from a skewed list with a rare one.
Offers arrive at random instants over the UTC day; the budget chooses every ``interval_s``.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

from gateway.core.samples.budget import DAY_S, Candidate, Ledger, choose
from gateway.core.samples.offer import Reason

MIX = {
    Reason.ERROR: 0.02,
    Reason.SHADOW_DISAGREEMENT: 0.01,
    Reason.LOW_CONFIDENCE: 0.04,
    Reason.USER_CORRECTED: 0.01,
    Reason.RANDOM: 0.92,
}
CLASSES = {"person": 0.5, "car": 0.3, "truck": 0.12, "bike": 0.07, "forklift": 0.01}
TOP = (Reason.ERROR, Reason.SHADOW_DISAGREEMENT)


@dataclass
class DayResult:
    budget: int
    offered_bytes: int
    sent_bytes: int
    offered: Counter[Reason]
    sent: Counter[Reason]
    offered_classes: Counter[str]
    sent_classes: Counter[str]
    device_bytes: Counter[str]
    expired: int

    def share(self, counts: Counter[Reason], reasons: tuple[Reason, ...]) -> float:
        return sum(counts[r] for r in reasons) / max(1, sum(counts.values()))

    @property
    def largest_device_share(self) -> float:
        return max(self.device_bytes.values()) / max(1, self.sent_bytes)


def offers(rng: random.Random, devices: int, total_bytes: int, day: int) -> list[Candidate]:
    rates = [math.exp(rng.gauss(0, 1)) for _ in range(devices)]
    rates[0] = sum(rates[1:]) / 4  # the noisy camera: a fifth of all offers
    names = [f"cam-{i:03d}" for i in range(devices)]
    reasons, weights = list(MIX), list(MIX.values())
    classes, cweights = list(CLASSES), list(CLASSES.values())
    out: list[Candidate] = []
    size_total = 0
    while size_total < total_bytes:
        size = rng.randint(1024, 8192)
        size_total += size
        out.append(
            Candidate(
                sha256=f"{len(out):064x}",
                device=rng.choices(names, rates)[0],
                reason=rng.choices(reasons, weights)[0],
                label=rng.choices(classes, cweights)[0],
                size=size,
                offered_at=day * DAY_S + rng.uniform(0, DAY_S),
            )
        )
    return sorted(out, key=lambda c: c.offered_at)


def simulate(
    seed: int,
    *,
    devices: int = 200,
    budget: int = 8 << 20,
    offered_factor: float = 10.0,
    interval_s: float = 600.0,
    device_share_max: float = 0.05,
) -> DayResult:
    rng = random.Random(seed)
    day = 20_000 + seed  # some UTC day
    all_offers = offers(rng, devices, int(budget * offered_factor), day)
    ledger, pool, i = Ledger(), [], 0
    sent: list[Candidate] = []
    expired = 0
    t = day * DAY_S
    while t <= (day + 1) * DAY_S:  # the last round is the next day's first: it expires the rest
        while i < len(all_offers) and all_offers[i].offered_at <= t:
            pool.append(all_offers[i])
            i += 1
        choice = choose(
            pool, ledger, t, budget=budget, interval_s=interval_s, device_share_max=device_share_max
        )
        ledger = choice.ledger
        gone = {c.sha256 for c in choice.chosen} | {c.sha256 for c in choice.expired}
        pool = [c for c in pool if c.sha256 not in gone]
        sent += choice.chosen
        expired += len(choice.expired)
        t += interval_s
    device_bytes: Counter[str] = Counter()
    for c in sent:
        device_bytes[c.device] += c.size
    return DayResult(
        budget=budget,
        offered_bytes=sum(c.size for c in all_offers),
        sent_bytes=sum(c.size for c in sent),
        offered=Counter(c.reason for c in all_offers),
        sent=Counter(c.reason for c in sent),
        offered_classes=Counter(c.label for c in all_offers),
        sent_classes=Counter(c.label for c in sent),
        device_bytes=device_bytes,
        expired=expired,
    )
