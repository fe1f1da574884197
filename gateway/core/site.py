"""The site's rollout decisions: pure transitions of the site's one value. The rule "nothing is
offered before it has been judged" lives here, and only here.

The value, :class:`~gateway.core.site_state.Site`, holds the accepted index's deployments *together
with* the judgement of each: a canary gate (:mod:`gateway.core.gates`), or the decision that it
needs none (gates off, or ``gates.first_version = "open"`` for a model's first version); the two
questions a poll asks of it (``admit``, ``rollback_for``) are in :mod:`gateway.core.site_state`.
Transitions take values and ``now`` and return the new value with every effect that follows, as
values (:mod:`gateway.core.site_effects`: persist, journal, publish, pin, wake, notify): the shells
(:mod:`gateway.rollout.keeper`, :mod:`gateway.rollout.site_loop`) only carry them out, in order.

* :func:`apply_index`: a newly accepted (or, at start-up, re-loaded) index goes into effect, and
  every deployment in it is judged in the same transition, so no poll answer or long-poll wake-up
  can see a deployment without its judgement; the signed coordinator commands (``paused``,
  ``aborted``) are applied in it too;
* :func:`on_control`: hold, release, abort, approve, at once, or a :class:`ControlRefused` saying
  why it would do nothing;
* :func:`admit_on_poll`: a device told ``waiting_for_wave`` asks, and its wave admits it if it has
  room;
* :func:`tick`: closed metric windows, device events and the cloud's commands, every few seconds.

The names of :mod:`~gateway.core.site_state` and :class:`~gateway.core.site_effects.Effects` are
offered here too, so ``site.Site``, ``site.admit`` and the like keep reading as one concept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from firmware_compat.matrix import CompatMatrix
from firmware_compat.version import try_version
from gateway.core.device import DeviceRecord
from gateway.core.errors import FormatError
from gateway.core.gates import (
    Action,
    Control,
    Decision,
    Event,
    GateLimits,
    GateState,
    InputDrift,
    Stage,
    apply_controls,
    artifact_changed,
    control_refusal,
    fill_wave,
    open_gate,
    step,
)
from gateway.core.gates import levels as L
from gateway.core.manifest import Command, Deployment, HealthChecks, parse_deployment
from gateway.core.reach import Lazy, eligible_for, running
from gateway.core.settings import GateSettings
from gateway.core.site_effects import Effects, settle
from gateway.core.site_state import HALTED, SAFE_MODE, WAITING, GatesView, Rollback, Site, admit, rollback_for
from gateway.core.waves import wave_target
from gateway.core.window import WindowStats

__all__ = [
    "HALTED",
    "SAFE_MODE",
    "WAITING",
    "ControlRefused",
    "Effects",
    "GatesView",
    "Rollback",
    "Site",
    "admit",
    "admit_counted",
    "admit_on_poll",
    "apply_index",
    "could_fill",
    "has_room",
    "on_control",
    "previous_stable",
    "rollback_for",
    "tick",
]


class ControlRefused(ValueError):
    """A control that would do nothing (e.g. release after an abort); the message says why."""


# -- transitions ---------------------------------------------------------------------------------------


def previous_stable(
    d: Deployment,
    known: Mapping[str, Mapping[str, Any]],
    gates: Mapping[str, GateState],
    verified: Callable[[str], bool],
) -> Deployment | None:
    """The newest earlier version of the model held here and not halted: baseline and rollback."""
    mine = try_version(d.version)
    best: tuple[Any, Deployment] | None = None
    for raw in known.values():
        if raw.get("model_id") != d.model_id or raw.get("version") == d.version:
            continue
        try:
            other = parse_deployment(raw)
        except FormatError:  # a manifest seen once that no longer parses: nobody's baseline
            continue
        v = try_version(other.version)
        if mine is None or v is None or not v < mine or not verified(other.sha256):
            continue
        gate = gates.get(other.key)
        if gate is not None and gate.stopped:
            continue  # a halted version is nobody's baseline
        if best is None or v > best[0]:
            best = (v, other)
    return best[1] if best else None


def apply_index(
    site: Site,
    *,
    index_version: int,
    deployments: Sequence[Deployment],
    commands: Mapping[str, str],
    now: float,
    settings: GateSettings,
    verified: Callable[[str], bool],
    devices: Sequence[DeviceRecord],
    matrix: CompatMatrix | None,
) -> tuple[Site, Effects]:
    """Put an index into effect, judging every deployment in it in the same step."""
    if site.index_version is not None and index_version <= site.index_version:
        return site, Effects()  # in effect already, or older: an older index never replaces a newer one
    old = site
    live = [d for d in deployments if d.end_time is None or d.end_time > now]
    known = {**site.known, **{d.key: dict(d.raw) for d in deployments}}
    gates, ungated, baselines = dict(site.gates), set(site.ungated), dict(site.baselines)
    decisions: list[Decision] = []
    for d in live:
        gate = gates.get(d.key)
        if gate is not None:
            if gate.sha256 and gate.sha256 != d.sha256:
                gates[d.key], made = artifact_changed(gate, d.sha256, now)
                decisions += made
            elif not gate.sha256:
                gates[d.key] = dataclasses.replace(gate, sha256=d.sha256)
            continue
        if d.key in ungated:
            continue
        baseline = previous_stable(d, known, gates, verified) if settings.enabled else None
        if not settings.enabled or (baseline is None and settings.first_version == "open"):
            ungated.add(d.key)
            continue
        if baseline is not None:
            baselines[d.key] = baseline
        gates[d.key], made = open_gate(
            d.key,
            d.model_id,
            d.version,
            baseline.version if baseline else None,
            sha256=d.sha256,
            settings=settings,
            now=now,
            eligible=eligible_for(d, live, devices, now, matrix),
            held_by=SAFE_MODE if site.safe_mode else None,
            running=running(d.version, d.model_id, devices),
            reference=site.levels.get(baseline.key) if baseline is not None else None,
        )
        decisions += made
    site = dataclasses.replace(
        site,
        index_version=index_version,
        deployments=tuple(deployments),
        commands=dict(commands),
        gates=gates,
        ungated=frozenset(ungated),
        baselines=baselines,
        known=known,
    )
    site, cloud = _cloud_commands(site, now, settings, devices, matrix)
    new = dataclasses.replace(site, version=site.version + 1)
    return settle(old, new, (*decisions, *cloud), changed=True, devices=devices)


def on_control(
    site: Site,
    key: str,
    control: Control,
    *,
    now: float,
    settings: GateSettings,
    devices: Sequence[DeviceRecord],
    matrix: CompatMatrix | None,
) -> tuple[Site, Effects]:
    """An operator's control, at once. KeyError: no gate; ControlRefused: it would do nothing."""
    gate = site.gates[key]
    refusal = control_refusal(gate, control.action)
    if refusal is not None:
        raise ControlRefused(refusal)
    eligible = Lazy(lambda: _eligible(site, key, now, devices, matrix))
    new, decisions = apply_controls(gate, [control], now=now, eligible=eligible, settings=settings)
    after = dataclasses.replace(site, gates={**site.gates, key: new}, version=site.version + 1)
    return settle(site, after, decisions, changed=True, devices=devices)


def has_room(site: Site, key: str, device_id: str, site_size: int, settings: GateSettings) -> bool:
    """Whether ``key``'s open wave may still admit ``device_id`` at a site of ``site_size`` devices
    (an upper bound of those eligible), from the value alone: the cheap question a poll asks before
    :func:`admit_on_poll` makes a pass over the site's devices."""
    gate = site.gates.get(key)
    if gate is None or not gate.active or gate.held_by is not None or device_id in gate.admitted:
        return False
    room = wave_target(settings.waves, gate.wave, site_size, settings.min_devices_per_wave)
    return room > len(gate.admitted)


def admit_on_poll(
    site: Site,
    key: str,
    device: DeviceRecord,
    *,
    now: float,
    settings: GateSettings,
    devices: Sequence[DeviceRecord],
    matrix: CompatMatrix | None,
) -> tuple[Site, Effects]:
    """A device told ``waiting_for_wave`` asks: if the open wave of ``key`` has a free place at the
    site's size now, the wave admits (in rank order) in this step, before the device is answered."""
    new, effects, _seen = admit_counted(
        site, key, device, now=now, settings=settings, devices=devices, matrix=matrix
    )
    return new, effects


def admit_counted(
    site: Site,
    key: str,
    device: DeviceRecord,
    *,
    now: float,
    settings: GateSettings,
    devices: Sequence[DeviceRecord],
    matrix: CompatMatrix | None,
) -> tuple[Site, Effects, tuple[int, int] | None]:
    """:func:`admit_on_poll`, and what its pass over the site's devices found once it is done:
    (eligible devices, of those admitted), or None when it made no pass."""
    gate = site.gates.get(key)
    if gate is None or device.device_id in gate.admitted or not gate.active:
        return site, Effects(), None
    room = wave_target(settings.waves, gate.wave, len(devices), settings.min_devices_per_wave)
    if room <= len(gate.admitted):
        return site, Effects(), None  # full even if every device were eligible: no eligibility pass
    eligible = _eligible(site, key, now, devices, matrix)
    new, decisions = fill_wave(gate, now, eligible, settings)
    seen = (len(eligible), sum(1 for d in new.admitted if d in eligible))
    if new is gate:
        return site, Effects(), seen
    after = dataclasses.replace(site, gates={**site.gates, key: new}, version=site.version + 1)
    return (*settle(site, after, decisions, changed=True, devices=devices), seen)


def could_fill(
    site: Site, key: str, eligible_at_most: int, admitted_eligible: int, settings: GateSettings
) -> bool:
    """Whether ``key``'s open wave could have a free place with at most ``eligible_at_most``
    eligible devices of which ``admitted_eligible`` (at least) are admitted: the wave's target
    grows with the eligible count only, so a poll need not pass over the devices when this says no."""
    gate = site.gates.get(key)
    if gate is None:
        return False
    target = wave_target(settings.waves, gate.wave, eligible_at_most, settings.min_devices_per_wave)
    return target > admitted_eligible


def tick(
    site: Site,
    *,
    now: float,
    settings: GateSettings,
    windows: Sequence[WindowStats],
    events: Sequence[Event],
    devices: Sequence[DeviceRecord],
    matrix: CompatMatrix | None,
    drift: InputDrift | None = None,
) -> tuple[Site, Effects]:
    """Every few seconds: the cloud's commands, then every gate's step on the new evidence (and the
    drift watch's view of the models' inputs: None without one, as in ``gate replay``)."""
    old = site
    site, decisions = _cloud_commands(site, now, settings, devices, matrix)
    changed = bool(decisions)
    by_key = {d.key: d for d in site.deployments}
    if windows:
        levels = L.update(
            L.prune(site.levels, by_key),
            windows,
            versions=frozenset(by_key),
            half_life_s=settings.reference_half_life_s,
        )
        site = dataclasses.replace(site, levels=levels)
    gates = dict(site.gates)
    for key, gate in site.gates.items():
        d = by_key.get(key)
        health = d.health if d is not None else _health(site.known.get(key))
        new, made = step(
            _noterunning(gate, devices),
            now=now,
            limits=GateLimits.of(health, settings).with_drift(drift, gate.model_id),
            eligible=_lazy_eligible(site, key, now, devices, matrix) if gate.active else {},
            windows=windows,
            events=events,
            reference=site.levels.get(f"{gate.model_id}@{gate.baseline_version}")
            if gate.baseline_version
            else None,
        )
        changed = changed or _answers_differ(gate, new)
        gates[key] = new
        decisions += made
    site = dataclasses.replace(site, gates=gates, version=site.version + changed)
    return settle(old, site, decisions, changed=changed, devices=devices)


def _noterunning(gate: GateState, devices: Sequence[DeviceRecord]) -> GateState:
    """A device that runs the candidate without having been admitted got it some other way (it ran
    it before the gate knew it): it informs the evidence but is not this gate's to roll back."""
    new = running(gate.version, gate.model_id, devices) - gate.admitted.keys() - gate.preexisting
    return dataclasses.replace(gate, preexisting=gate.preexisting | new) if new else gate


def _answers_differ(a: GateState, b: GateState) -> bool:
    return a.stage != b.stage or a.admitted != b.admitted or a.ran != b.ran


def _health(raw: Mapping[str, Any] | None) -> HealthChecks:
    """The health checks of a deployment no longer in the index (from the manifests seen)."""
    try:
        return parse_deployment(raw).health if raw is not None else HealthChecks()
    except FormatError:
        return HealthChecks()


def _cloud_commands(
    site: Site,
    now: float,
    settings: GateSettings,
    devices: Sequence[DeviceRecord],
    matrix: CompatMatrix | None,
) -> tuple[Site, list[Decision]]:
    """Signed coordinator commands naming ``model@version`` or ``model``: ``paused`` holds the gate,
    ``aborted`` aborts it, a command cleared releases what ``paused`` held."""
    gates, held = dict(site.gates), set(site.cloud_held)
    out: list[Decision] = []
    for key, gate in site.gates.items():
        command = site.commands.get(key) or site.commands.get(gate.model_id)
        control: Control | None = None
        if command == Command.PAUSED and key not in held and gate.active:
            held.add(key)
            control = Control(Action.HOLD, "cloud", "signed coordinator command: paused")
        elif command == Command.ABORTED and gate.stage != Stage.ABORTED:
            control = Control(Action.ABORT, "cloud", "signed coordinator command: aborted")
        elif command is None and key in held:
            held.discard(key)
            if gate.held_by == "cloud" and gate.active:  # a halt is released by a person only
                control = Control(Action.RELEASE, "cloud", "coordinator command cleared")
        if control is None:
            continue
        eligible = _lazy_eligible(site, key, now, devices, matrix)
        gates[key], made = apply_controls(gate, [control], now=now, eligible=eligible, settings=settings)
        out += made
    return dataclasses.replace(site, gates=gates, cloud_held=frozenset(held)), out


def _lazy_eligible(
    site: Site, key: str, now: float, devices: Sequence[DeviceRecord], matrix: CompatMatrix | None
) -> Lazy:
    return Lazy(lambda: _eligible(site, key, now, devices, matrix))


def _eligible(
    site: Site,
    key: str,
    now: float,
    devices: Sequence[DeviceRecord],
    matrix: CompatMatrix | None,
) -> dict[str, Mapping[str, str]]:
    live = [d for d in site.deployments if d.end_time is None or d.end_time > now]
    d = next((x for x in live if x.key == key), None)
    return eligible_for(d, live, devices, now, matrix) if d is not None else {}
