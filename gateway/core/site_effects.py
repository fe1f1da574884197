"""What follows a site transition, as values: the transition that decided says what is to be done,
and the shell only carries it out, in the order given (as mitmproxy's layers return commands such
as ``OpenConnection`` and ``SendData`` that a thin server carries out).

The order is the rule "judged and durable before any poll can see it":

1. :class:`Persist`: the gate state, the new decisions in the audit log (the gate keeper's files);
2. :class:`Journal`: the decisions into the uplink's outbox, for the cloud;
3. :class:`Publish`: the new value becomes what every poll reads;
4. then :class:`PinRollbackTargets` (the store keeps each candidate's way back),
   :class:`WakePolls` (some device's answer may differ), :class:`WakeUplink` (decisions to send)
   and, after a halt or an abort, one :class:`Notify` per rollback target: the devices that must go
   back, and the MQTT notice's JSON.

:func:`settle` turns a transition's outcome (the value before and after, its decisions, whether an
answer may differ, the site's devices) into :class:`Effects`. The gate keeper
(:mod:`gateway.rollout.keeper`) carries out the steps up to :class:`Publish` under its lock; the site
loop (:mod:`gateway.rollout.site_loop`) the rest, delivering a notice to the recipients its broker
has connected. ``gate replay`` reads the decisions and carries out nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.core.device import DeviceRecord
from gateway.core.gates import Action, Decision
from gateway.core.manifest import Deployment
from gateway.core.site_state import Site, rollback_for

STOP_ACTIONS = frozenset({Action.HALT, Action.ABORT})  # decisions after which devices must go back


@dataclass(frozen=True)
class Persist:
    """Write ``site``'s gates (and what the keeper keeps beside them) and ``decisions``' audit lines."""

    site: Site
    decisions: tuple[Decision, ...]


@dataclass(frozen=True)
class Journal:
    """Put the decisions in the uplink's outbox: durable before the value they made is published."""

    decisions: tuple[Decision, ...]


@dataclass(frozen=True)
class Publish:
    """``site`` becomes the value every poll answer reads."""

    site: Site


@dataclass(frozen=True)
class PinRollbackTargets:
    """Each gated candidate's baseline is kept in the store (``halted``: those whose gate stopped)."""

    baselines: Mapping[str, Deployment]
    halted: tuple[str, ...]


@dataclass(frozen=True)
class WakePolls:
    """Some device's answer may differ: wake the long polls."""


@dataclass(frozen=True)
class WakeUplink:
    """Decisions were journaled: send them now rather than at the next round."""


@dataclass(frozen=True)
class Notify:
    """Tell each of ``recipients`` (device ids) to roll back: ``payload`` on its updates topic."""

    recipients: tuple[str, ...]
    payload: bytes  # JSON

    @staticmethod
    def topic(device_id: str) -> str:
        return f"devices/{device_id}/updates"


Effect = Persist | Journal | Publish | PinRollbackTargets | WakePolls | WakeUplink | Notify


@dataclass(frozen=True)
class Effects:
    """A transition's effects, in the order the shell carries them out."""

    steps: tuple[Effect, ...] = ()

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return next((s.decisions for s in self.steps if isinstance(s, Journal)), ())

    @property
    def changed(self) -> bool:
        """Some device's answer may differ."""
        return any(isinstance(s, WakePolls) for s in self.steps)


def settle(
    old: Site,
    new: Site,
    decisions: Sequence[Decision],
    *,
    changed: bool,
    devices: Sequence[DeviceRecord],
) -> tuple[Site, Effects]:
    """A transition from ``old`` to ``new`` that made ``decisions``: the new value and every effect
    of it. Nothing when the value is the same object (the transition did nothing)."""
    if new is old:
        return old, Effects()
    made = tuple(decisions)
    steps: list[Effect] = []
    if made or new.gates != old.gates or new.ungated != old.ungated:
        steps.append(Persist(new, made))
    if made:
        steps.append(Journal(made))
    steps += [Publish(new), rollback_pins(new)]
    if changed:
        steps.append(WakePolls())
    if made:
        steps.append(WakeUplink())
    if any(d.action in STOP_ACTIONS for d in made):
        steps += rollback_notices(new, devices)
    return new, Effects(tuple(steps))


def rollback_pins(site: Site) -> PinRollbackTargets:
    """What the store must keep for the way back: every baseline, and which gates stopped."""
    return PinRollbackTargets(site.baselines, tuple(k for k, g in site.gates.items() if g.stopped))


def rollback_notices(site: Site, devices: Sequence[DeviceRecord]) -> list[Notify]:
    """One notice per rollback target, to every device of ``devices`` that must go back to it: the
    previous stable version, or (a model's first version halted) its previous slot."""
    groups: dict[bytes, list[str]] = {}
    for device in devices:
        back = rollback_for(site, device)
        if back is None:
            continue
        note: dict[str, Any] = {
            "rollback": True,
            "model_id": back.model_id,
            "version": back.to.version if back.to else None,
            "poll": True,
        }
        if back.to is None:
            note["previous_slot"] = True  # a first version halted: go back to the previous slot
        groups.setdefault(json.dumps(note).encode(), []).append(device.device_id)
    return [Notify(tuple(ids), payload) for payload, ids in groups.items()]
