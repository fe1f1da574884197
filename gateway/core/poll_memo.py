"""Each device's last poll answer, kept until one of the values it was computed from changes.

A site of thousands of devices asks the same question thousands of times a minute, and almost every
time the inputs are the ones of the device's previous poll. :class:`PollMemo` answers from memory
when they are, and otherwise asks :func:`gateway.core.policy.answer`. An answer is reused only when
all of these are the same as when it was computed, so a reused answer is the one the policy would
give now (``tests/core/test_poll_memo.py`` and the random sites of ``tests/rollout/sim.py`` check
that on every answer):

* what the published :class:`~gateway.core.site.Site` holds that an answer reads
  (:func:`answer_inputs`: the deployments, the commands, and of each gate what
  ``admit`` and ``rollback_for`` look at; a tick that only gathered evidence changes none of it);
* the device's facts the policy reads: its ``attrs`` (equal; usually the same mapping object, which
  the inventory keeps when a poll changes nothing), ``model_id`` and ``model_version``;
* whether the clock is trusted, and where ``now`` lies between the deployments' window edges
  (``start_time``/``end_time``: between two edges every comparison with ``now`` comes out the same);
* the verified state of the blobs the policy asked about (it asks about one at most).

Equal answers come back as one object, whichever devices they went to, so the caller can keep what
it derives from an answer (the HTTP reply) by the answer's identity. It leaves the render of the
manifest, and the matrix (fixed for the life of the process), to the caller.

The site's gates are asked of ``site`` itself (:class:`gateway.core.site_state.GatesView`): the
caller hands in the published value and nothing else, no shell object. ``gates`` is the seam a test
uses to put other answers in their place (the leak test's gate that admits everyone); what it is
given must answer from ``site`` alone.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from firmware_compat.matrix import CompatMatrix
from gateway.core import eligibility, policy
from gateway.core.device import DeviceRecord
from gateway.core.site_state import GatesView, Site

MAX_ENTRIES = 200_000  # above the inventory's default bound: a full site stays in memory
MAX_ANSWERS = 4096  # distinct answers (a few per deployment and reason)


@dataclass(frozen=True, slots=True)
class _Entry:
    device: DeviceRecord  # the record it was computed for: the same object, the same facts
    attrs: Mapping[str, str]
    model_id: str | None
    model_version: str | None
    clock_trusted: bool
    slot: int
    consulted: tuple[tuple[str, bool], ...]
    answer: policy.PollAnswer


def answer_inputs(site: Site) -> tuple[Any, ...]:
    """Everything of ``site`` a poll answer reads: the index in effect and its commands, and what
    :func:`gateway.core.site.admit` and :func:`~gateway.core.site.rollback_for` look at (change
    those, change this). Two sites with equal inputs give every device the same answer: a tick that
    only gathered evidence changes none of them."""
    gates = tuple(
        (key, g.model_id, g.version, g.stage, g.admitted.keys(), g.preexisting, g.rollback_set)
        for key, g in sorted(site.gates.items())
    )
    return (
        site.deployments,
        tuple(sorted(site.commands.items())),
        site.ungated,
        tuple(sorted(site.baselines.items())),
        gates,
    )


def window_edges(site: Site) -> tuple[float, ...]:
    """Every instant at which a comparison of ``now`` with a deployment's window can change."""
    return eligibility.window_edges(site.deployments)


def uncached(
    *,
    site: Site,
    device: DeviceRecord,
    now: float,
    clock_trusted: bool,
    verified: Callable[[str], bool],
    matrix: CompatMatrix | None,
    gates: policy.SiteGates | None = None,
) -> policy.PollAnswer:
    """The policy's answer for the index in effect in ``site``: what every poll would compute
    (``gates``: the site's own, :class:`~gateway.core.site_state.GatesView`, unless given)."""
    return policy.answer(
        deployments=[d for d in site.deployments if d.end_time is None or d.end_time > now],
        commands=site.commands,
        device=device,
        now=now,
        clock_trusted=clock_trusted,
        verified=verified,
        matrix=matrix,
        gates=GatesView(site) if gates is None else gates,
    )


class PollMemo:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._site: Site | None = None
        self._inputs: tuple[object, ...] | None = None
        self._edges: tuple[float, ...] = ()
        self._entries: dict[str, _Entry] = {}
        self._answers: dict[tuple[object, ...], policy.PollAnswer] = {}
        self.hits = 0
        self.misses = 0

    def answer(
        self,
        site: Site,
        device: DeviceRecord,
        now: float,
        clock_trusted: bool,
        verified: Callable[[str], bool],
        matrix: CompatMatrix | None,
        gates: policy.SiteGates | None = None,
    ) -> policy.PollAnswer:
        """The answer :func:`uncached` would give now, from memory when its inputs are the same."""
        if site is not self._site:
            inputs = answer_inputs(site)
            if inputs != self._inputs:  # every remembered answer was for another index or gate
                self._inputs, self._edges = inputs, window_edges(site)
                self._entries.clear()
                self._answers.clear()
            self._site = site
        slot = bisect_right(self._edges, now) if self._edges else 0
        entries = self._entries
        e = entries.get(device.device_id)
        if (
            e is not None
            and e.clock_trusted == clock_trusted
            and e.slot == slot
            and (
                e.device is device  # a repeated poll: the inventory kept the record
                or (
                    (e.attrs is device.attrs or e.attrs == device.attrs)
                    and e.model_version == device.model_version
                    and e.model_id == device.model_id
                )
            )
        ):
            for sha, was in e.consulted:  # a loop, not all(): no generator made on every poll
                if verified(sha) != was:
                    break
            else:
                self.hits += 1
                return e.answer
        self.misses += 1
        consulted: list[tuple[str, bool]] = []

        def recording(sha256: str) -> bool:
            result = verified(sha256)
            consulted.append((sha256, result))
            return result

        answer = uncached(
            site=site,
            device=device,
            now=now,
            clock_trusted=clock_trusted,
            verified=recording,
            matrix=matrix,
            gates=gates,
        )
        answer = self._interned(answer)
        if len(entries) >= self.max_entries:
            entries.clear()
        entries[device.device_id] = _Entry(
            device,
            device.attrs,
            device.model_id,
            device.model_version,
            clock_trusted,
            slot,
            tuple(consulted),
            answer,
        )
        return answer

    def _interned(self, answer: policy.PollAnswer) -> policy.PollAnswer:
        """The one object of all equal answers (the same deployment object, the same fields), so a
        caller may key what it derives from an answer (its HTTP form) by identity."""
        d = answer.deployment
        key = (
            id(d),
            answer.reason,
            answer.detail,
            answer.blocked_by_firmware,
            answer.rollback,
            answer.shadow,
            id(answer.waiting_for),
        )
        if (
            (same := self._answers.get(key)) is not None
            and same.deployment is d
            and same.waiting_for is answer.waiting_for
        ):
            return same
        if len(self._answers) >= MAX_ANSWERS:
            self._answers.clear()
        self._answers[key] = answer
        return answer
