"""Which kept samples go up now, within the day's uplink budget: :func:`choose`. Pure.

The rule, each time the gateway chooses (every ``samples.choose_interval_s``):

1. **Budget, paced.** The day is the UTC day. Of ``samples.budget_bytes_per_day`` (content bytes),
   the share of the day that has passed (plus one interval) is released; what was released and not
   spent carries on within the day. So a sample offered in the evening still finds room, and the
   day ends within one sample of the budget when devices offer more than it.
2. **Priority.** Errors, shadow disagreements and low confidence first (one tier), then samples a
   user corrected, then random ones (:data:`~gateway.core.samples.offer.PRIORITY`). A lower tier
   gets only what the higher ones left of the released bytes.
3. **Spread over devices.** Within a tier, the device sent the fewest bytes today goes next, one
   sample at a time (water-filling). First every device is served only up to
   ``device_share_max`` of the day's budget (all tiers in order); only then does what is left go
   to the samples past that share, again tier by tier and fewest bytes first: one camera cannot
   fill the day, yet a budget nobody else wants is not left unused.
4. **Spread over classes.** From that device, the sample of the class chosen least often today
   (site-wide) goes next, the oldest first among equals.
5. **Size does not jump the queue.** When the next sample in this order is larger than the bytes
   released so far, choosing stops until enough is released for it: a small random sample never
   goes ahead of a large error. Only a sample larger than what is left of the whole day's budget
   is passed over (it can no longer go today), so the day still ends within one sample of the
   budget. A sample still kept when its day ends is dropped ("dropped by budget").

The ledger (bytes and classes chosen today) is a value the caller keeps durably with the choice.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gateway.core.samples.offer import PRIORITY, Reason

DAY_S = 86_400.0


def day_of(t: float) -> int:
    return int(t // DAY_S)


@dataclass(frozen=True)
class Candidate:
    """A kept sample as the budget sees it (its content stays in the store)."""

    sha256: str
    device: str
    reason: Reason
    label: str
    size: int
    offered_at: float


@dataclass(frozen=True)
class Ledger:
    """What was chosen on ``day``: bytes in all, bytes per device, samples per class."""

    day: int = -1
    spent: int = 0
    devices: dict[str, int] = field(default_factory=dict)
    classes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"day": self.day, "spent": self.spent, "devices": self.devices, "classes": self.classes}

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Ledger:
        """The ledger as :meth:`to_json` wrote it; ValueError (or KeyError) when it is not."""
        day, spent, devices, classes = doc["day"], doc["spent"], doc["devices"], doc["classes"]
        if not (
            isinstance(day, int)
            and isinstance(spent, int)
            and isinstance(devices, dict)
            and isinstance(classes, dict)
        ):
            raise ValueError("the samples ledger is not of its shape")
        return cls(day, spent, dict(devices), dict(classes))


@dataclass(frozen=True)
class Choice:
    chosen: list[Candidate]  # to send now, in this order
    expired: list[Candidate]  # their day is over: dropped by budget
    ledger: Ledger  # the ledger after this choice


def released(budget: int, now: float, interval_s: float) -> int:
    """The bytes of the day's budget released by ``now`` (the whole of it in the day's last interval)."""
    into_day = now - day_of(now) * DAY_S
    return int(budget * min(1.0, (into_day + interval_s) / DAY_S))


@dataclass
class _Round:
    """One choice in the making: what is still released, what is left of the day, who got what."""

    allowance: int
    day_left: int
    devices: dict[str, int]
    classes: dict[str, int]
    chosen: list[Candidate] = field(default_factory=list)
    waiting_for_bytes: bool = False  # the next in order needs more released bytes: stop here


def _pass(cands: Iterable[Candidate], r: _Round, cap: float | None) -> None:
    """One tier: water-filling over devices (fewest bytes first), least-chosen class first."""
    queues: dict[str, dict[str, deque[Candidate]]] = {}
    for c in sorted(cands, key=lambda c: (c.offered_at, c.sha256)):
        queues.setdefault(c.device, {}).setdefault(c.label, deque()).append(c)
    heap = [(r.devices.get(d, 0), d) for d in queues]
    heapq.heapify(heap)
    while heap:
        sent, d = heapq.heappop(heap)
        if cap is not None and sent >= cap:
            continue  # this device has had its share for now; it may get leftovers later
        by_class = queues[d]
        label = min(
            by_class, key=lambda k: (r.classes.get(k, 0), by_class[k][0].offered_at, by_class[k][0].sha256)
        )
        c = by_class[label][0]
        if c.size > r.allowance and c.size <= r.day_left:
            r.waiting_for_bytes = True  # it goes first once enough is released: nothing jumps ahead
            return
        by_class[label].popleft()
        if not by_class[label]:
            del by_class[label]
        if c.size <= r.allowance:
            r.chosen.append(c)
            r.allowance -= c.size
            r.day_left -= c.size
            r.devices[d] = r.devices.get(d, 0) + c.size
            r.classes[c.label] = r.classes.get(c.label, 0) + 1
        if by_class:  # (a sample larger than what is left of the day's budget is passed over)
            heapq.heappush(heap, (r.devices.get(d, 0), d))


def choose(
    candidates: Sequence[Candidate],
    ledger: Ledger,
    now: float,
    *,
    budget: int,
    interval_s: float,
    device_share_max: float,
) -> Choice:
    """The samples to send now and the ones whose day is over (see the module's rule)."""
    day = day_of(now)
    if ledger.day != day:
        ledger = Ledger(day=day)
    expired = [c for c in candidates if day_of(c.offered_at) < day]
    waiting = [c for c in candidates if day_of(c.offered_at) >= day]
    r = _Round(
        allowance=released(budget, now, interval_s) - ledger.spent,
        day_left=budget - ledger.spent,
        devices=dict(ledger.devices),
        classes=dict(ledger.classes),
    )
    tiers = sorted(set(PRIORITY.values()))
    for cap in (budget * device_share_max, None):  # first within each device's share, then the rest
        for tier in tiers:
            if r.waiting_for_bytes:
                break
            taken = {c.sha256 for c in r.chosen}
            _pass([c for c in waiting if PRIORITY[c.reason] == tier and c.sha256 not in taken], r, cap)
    spent = ledger.spent + sum(c.size for c in r.chosen)
    return Choice(r.chosen, expired, Ledger(day, spent, r.devices, r.classes))
