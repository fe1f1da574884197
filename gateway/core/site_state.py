"""The site's decision state as one value, and the two questions a poll asks of it.

A :class:`Site` holds the accepted index's deployments *together with* the judgement of each: a
canary gate (:mod:`gateway.core.gates`), or the decision that it needs none. Its transitions live in
:mod:`gateway.core.site`, what the shell does after one in :mod:`gateway.core.site_effects`.

The questions: :func:`admit` (may this device have this candidate now?) and :func:`rollback_for`
(where does a device that ran a halted candidate go back to?). A deployment with no judgement is
answered ``waiting_for_wave``: fail closed. Both read the value alone: a poll asks them of the value
the keeper published (through :class:`GatesView`, the poll policy's
:class:`~gateway.core.policy.SiteGates`), with no shell object in between.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.device import DeviceRecord
from gateway.core.gates import GateState, Stage
from gateway.core.gates import levels as L
from gateway.core.manifest import Deployment

WAITING = "waiting_for_wave"
HALTED = "halted_at_site"
SAFE_MODE = "safe-mode"  # who holds the gates opened while the gate state could not be read


@dataclass(frozen=True)
class Rollback:
    """Where a device that ran a halted or aborted candidate goes back to."""

    model_id: str
    version: str  # the candidate it leaves
    to: Deployment | None  # the previous stable manifest; None: its previous slot (a first version)


@dataclass(frozen=True)
class Site:
    index_version: int | None = None
    deployments: tuple[Deployment, ...] = ()  # the index in effect: every one of them judged
    commands: Mapping[str, str] = field(default_factory=dict)
    gates: Mapping[str, GateState] = field(default_factory=dict)
    ungated: frozenset[str] = frozenset()  # judged: needs no gate
    baselines: Mapping[str, Deployment] = field(default_factory=dict)  # candidate -> previous stable
    known: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # every manifest seen
    cloud_held: frozenset[str] = frozenset()  # gates held by a signed ``paused``
    safe_mode: str | None = None  # why new gates open held (the gate state could not be read)
    # every device's own level on each version in the index (a gate compares with it when it opens)
    levels: Mapping[str, L.Levels] = field(default_factory=dict)
    version: int = 0  # bumps with every change that can change an answer

    def judged(self, key: str) -> bool:
        return key in self.ungated or key in self.gates


def admit(site: Site, candidate: Deployment, device: DeviceRecord) -> str | None:
    """None when the device may have the candidate now; "shadow" in the shadow stage; else why not."""
    if candidate.key in site.ungated:
        return None
    gate = site.gates.get(candidate.key)
    if gate is None:
        return WAITING  # not judged yet: fail closed
    if gate.stage == Stage.DONE:
        return None
    if gate.stopped:
        return HALTED
    if device.device_id in gate.admitted:
        return "shadow" if gate.stage == Stage.SHADOW else None
    return WAITING


def rollback_for(site: Site, device: DeviceRecord) -> Rollback | None:
    """For a device that runs a halted or aborted candidate it was admitted to (or ran)."""
    for key, gate in site.gates.items():
        if not gate.stopped or device.model_version != gate.version:
            continue
        if device.model_id is not None and device.model_id != gate.model_id:
            continue
        if device.device_id in gate.preexisting:
            continue  # it ran this version before the gate: not this gate's to send back
        if device.device_id in gate.rollback_set or device.device_id in gate.admitted:
            return Rollback(gate.model_id, gate.version, site.baselines.get(key))
    return None


@dataclass(frozen=True)
class GatesView:
    """The poll policy's two questions (:class:`gateway.core.policy.SiteGates`) asked of one
    published :class:`Site` value."""

    site: Site

    def admit(self, candidate: Deployment, device: DeviceRecord, now: float) -> str | None:
        return admit(self.site, candidate, device)

    def rollback_for(self, device: DeviceRecord, now: float) -> Rollback | None:
        return rollback_for(self.site, device)
