"""The thin shell around the site's pure rollout decisions (:mod:`gateway.core.site`): it feeds
them, carries out the durable part of their effects, publishes, and hands the rest of the effects
(:mod:`gateway.core.site_effects`) back to the site loop.

* Every transition (a new index, a control, a poll's admission, a tick) runs under one lock: the
  core computes the new :class:`~gateway.core.site_state.Site` and its effects, and the keeper
  carries them out in their order up to :class:`~gateway.core.site_effects.Publish`: write the gate
  state and audit log (``Persist``), journal the decisions (``Journal``, through the ``durable``
  step it is given), then publish. Poll answers read the published value, so they only ever see
  judged, durable state: a crash between the two leaves the old state, and after a restart the same
  judgement is made again from the same files.
* Inputs: closed aggregate windows and device events are buffered and taken by the next tick.
* The published value (:attr:`site`) is what a poll asks the core about (:mod:`gateway.rollout.polls`);
  :meth:`admit` and :meth:`rollback_for` ask the same of it, for tests and tools.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from firmware_compat.matrix import CompatMatrix
from gateway.core import site as S
from gateway.core import site_effects as E
from gateway.core.device import DeviceRecord
from gateway.core.eligibility import parse_ok
from gateway.core.errors import DamagedStateError
from gateway.core.gates import Action, Control, Event, GateState, InputDrift
from gateway.core.manifest import Deployment, parse_deployment
from gateway.core.settings import GateSettings
from gateway.core.window import WindowStats
from gateway.rollout.gate_store import GateStore
from gateway.runtime import atomic

log = logging.getLogger(__name__)

SAFE_MODE_ACTION = "safe mode: every candidate held at waiting_for_wave until `ota-gateway gate release`"
Transition = Callable[[S.Site], tuple[S.Site, S.Effects]]
# decisions a person should see in the log as warnings; a gate opening or advancing is news, not one
ALARMING = frozenset({Action.HALT, Action.ABORT, Action.OBSERVE, Action.AWAIT, Action.HOLD})


class GateKeeper:
    def __init__(self, settings: GateSettings, folder: Path) -> None:
        self.settings = settings
        self.store = GateStore(folder)
        self.site = S.Site()
        self._events: list[Event] = []
        self._windows: list[WindowStats] = []
        self._lock = asyncio.Lock()
        self.recovered: list[dict[str, Any]] = []  # damaged gate files found at load (for /status)
        # the last pass over the devices for a poll: (site version, deployment, site size, eligible,
        # of those admitted); a later poll passes again only if the wave could then have room
        self._seen: tuple[int, str, int, int, int] | None = None
        self.passes = 0  # passes over the site's devices made for polls, and the records examined
        self.examined = 0

    @property
    def gates(self) -> Mapping[str, GateState]:
        return self.site.gates

    @property
    def version(self) -> int:
        return self.site.version

    # -- persistence ------------------------------------------------------------------------------

    def load(self) -> None:
        """Blocking. A gate file that cannot be read is moved aside and the site starts in safe mode:
        every gate opened from then on is held (``site.SAFE_MODE``) with nobody admitted until an
        operator releases it; ``recovered`` and ``site.safe_mode`` say so in ``/status``."""
        safe_mode: str | None = None
        gates: dict[str, GateState] = {}
        meta: dict[str, Any] = {}
        had_gates = self.store.state_path.exists()
        try:
            gates = self.store.load()
        except DamagedStateError as exc:
            safe_mode = self._recover(self.store.state_path, exc)
        try:
            meta = self.store.load_meta()
        except DamagedStateError as exc:
            safe_mode = safe_mode or self._recover(self.store.meta_path, exc)
        if meta.get("known") and not had_gates:  # both are written together
            problem = f"missing while {self.store.meta_path.name} lists deployments"
            self.recovered.append(atomic.recovered(self.store.state_path, problem, SAFE_MODE_ACTION))
            safe_mode = safe_mode or f"{self.store.state_path.name} {problem}"
        baselines: dict[str, Deployment] = {}
        for key, raw in meta.get("baselines", {}).items():
            try:
                baselines[key] = parse_deployment(raw)
            except Exception:
                log.warning("cannot read the stored baseline manifest for %s", key)
        self.site = S.Site(
            gates=gates,
            baselines=baselines,
            known=dict(meta.get("known", {})),
            ungated=frozenset(meta.get("ungated", ())),
            cloud_held=frozenset(meta.get("cloud_held", ())),
            safe_mode=safe_mode,
        )

    def _recover(self, path: Path, exc: DamagedStateError) -> str:
        moved = atomic.move_aside(path)
        action = SAFE_MODE_ACTION
        self.recovered.append(atomic.recovered(path, exc.problem, action, moved))
        return f"{path.name} could not be read ({exc.problem})"

    def _meta(self, site: S.Site) -> dict[str, Any]:
        return {
            "known": dict(site.known),
            "baselines": {k: dict(d.raw) for k, d in site.baselines.items()},
            "ungated": sorted(site.ungated),
            "cloud_held": sorted(site.cloud_held),
        }

    async def _transition(
        self, change: Transition, durable: Callable[[S.Effects], Awaitable[None]] | None = None
    ) -> S.Effects:
        """Compute, then carry out the effects up to publishing (the gate files, then ``durable``),
        in the core's order, one transition at a time. The rest is the caller's to carry out."""
        async with self._lock:
            _new, effects = change(self.site)
            for step in effects.steps:
                if isinstance(step, E.Persist):
                    site = step.site
                    await asyncio.to_thread(self.store.save, site.gates, step.decisions, self._meta(site))
                elif isinstance(step, E.Journal) and durable is not None:
                    await durable(effects)
                elif isinstance(step, E.Publish):
                    self.site = step.site
                    break
        for d in effects.decisions:
            level = logging.WARNING if d.action in ALARMING else logging.INFO
            log.log(level, "gate %s wave %d: %s (%s)", d.deployment, d.wave + 1, d.action, d.reason)
        return effects

    # -- transitions --------------------------------------------------------------------------------

    async def apply_index(
        self,
        index_version: int,
        deployments: Sequence[Deployment],
        commands: Mapping[str, str],
        *,
        now: float,
        verified: Callable[[str], bool],
        devices: Sequence[DeviceRecord],
        matrix: CompatMatrix | None,
        durable: Callable[[S.Effects], Awaitable[None]] | None = None,
    ) -> S.Effects:
        for d in deployments:  # the core says which can never be offered, and why; the shell says it
            why = parse_ok(d)
            if why is not None:
                log.error("deployment %s does not parse (%s); that deployment is not offered", d.key, why)
        return await self._transition(
            lambda site: S.apply_index(
                site,
                index_version=index_version,
                deployments=deployments,
                commands=commands,
                now=now,
                settings=self.settings,
                verified=verified,
                devices=devices,
                matrix=matrix,
            ),
            durable,
        )

    async def control(
        self,
        deployment: str,
        action: str,
        by: str,
        why: str,
        *,
        now: float,
        devices: Sequence[DeviceRecord],
        matrix: CompatMatrix | None,
        durable: Callable[[S.Effects], Awaitable[None]] | None = None,
    ) -> S.Effects:
        """KeyError: no gate for ``deployment``; ControlRefused: it would do nothing (and why)."""
        log.warning("gate %s: %s by %s: %s", deployment, action, by, why or "(no reason given)")
        return await self._transition(
            lambda site: S.on_control(
                site,
                deployment,
                Control(action, by, why),
                now=now,
                settings=self.settings,
                devices=devices,
                matrix=matrix,
            ),
            durable,
        )

    def may_admit(self, device_id: str, candidate_key: str, site_size: int) -> bool:
        """Whether a poll of ``device_id``, waiting for ``candidate_key``'s wave, may be admitted now,
        from memory alone (the poll path asks first, before any pass over the site's devices): not
        while the wave is full at ``site_size`` devices (an upper bound of those eligible), nor
        while, since the last pass in the same state, too few devices joined to give the wave a place
        (each joiner adds at most one eligible device; the wave's target grows with that count only)."""
        if not S.has_room(self.site, candidate_key, device_id, site_size, self.settings):
            return False
        seen = self._seen
        if seen is None or seen[:2] != (self.site.version, candidate_key) or site_size < seen[2]:
            return True
        _v, _k, size, eligible, admitted = seen
        if site_size == size:
            return False
        return S.could_fill(self.site, candidate_key, eligible + site_size - size, admitted, self.settings)

    async def admit_on_poll(
        self,
        device: DeviceRecord,
        candidate: Deployment,
        *,
        now: float,
        devices: Sequence[DeviceRecord],
        site_size: int,
        matrix: CompatMatrix | None,
        durable: Callable[[S.Effects], Awaitable[None]] | None = None,
    ) -> S.Effects:
        """A device waiting for ``candidate``'s wave asks: admitted now if the wave has a free place
        (see :meth:`may_admit`, which the caller asks first)."""
        s = self.settings
        if not self.may_admit(device.device_id, candidate.key, site_size):
            return S.Effects()
        found: list[tuple[int, int] | None] = []

        def change(site: S.Site) -> tuple[S.Site, S.Effects]:
            new, effects, seen = S.admit_counted(
                site, candidate.key, device, now=now, settings=s, devices=devices, matrix=matrix
            )
            found.append(seen)
            return new, effects

        effects = await self._transition(change, durable)
        if found and found[-1] is not None:
            self.passes += 1
            self.examined += len(devices)
            self._seen = (self.site.version, candidate.key, site_size, *found[-1])
        return effects

    async def tick(
        self,
        now: float,
        *,
        devices: Sequence[DeviceRecord],
        matrix: CompatMatrix | None,
        durable: Callable[[S.Effects], Awaitable[None]] | None = None,
        drift: InputDrift | None = None,
    ) -> S.Effects:
        windows, self._windows = self._windows, []
        events, self._events = self._events, []
        try:
            return await self._transition(
                lambda site: S.tick(
                    site,
                    now=now,
                    settings=self.settings,
                    windows=windows,
                    events=events,
                    devices=devices,
                    matrix=matrix,
                    drift=drift,
                ),
                durable,
            )
        except BaseException:
            # nothing was published: the next tick takes these inputs again, before newer ones
            self._windows[:0] = windows
            self._events[:0] = events
            raise

    # -- inputs -------------------------------------------------------------------------------------

    def on_windows(self, windows: Sequence[WindowStats], _now: float) -> None:
        self._windows.extend(windows)

    def on_event(self, device_id: str, event: str, version: str | None) -> None:
        self._events.append(Event(device_id, event, version))

    # -- the published value's answers (a poll asks the core of :attr:`site` itself) -----------------

    def admit(self, candidate: Deployment, device: DeviceRecord, now: float) -> str | None:
        return S.admit(self.site, candidate, device)

    def rollback_for(self, device: DeviceRecord, now: float) -> S.Rollback | None:
        return S.rollback_for(self.site, device)

    def status(self) -> list[dict[str, Any]]:
        out = []
        for key, g in self.site.gates.items():
            last = g.decisions[-1] if g.decisions else None
            out.append(
                {
                    "deployment": key,
                    "baseline": g.baseline_version,
                    "stage": str(g.stage),
                    "wave": g.wave,
                    "held_by": g.held_by,
                    "awaiting_approval": g.awaiting_approval,
                    "admitted": len(g.admitted),
                    "ran": len(g.ran),
                    "rollback": len(g.rollback_set),
                    "last_decision": last.to_json() if last else None,
                }
            )
        return out
