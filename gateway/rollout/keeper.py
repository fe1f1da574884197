"""The thin shell around the pure gates: feeds them, persists them, and acts on their decisions.

* A gate is opened for every deployment in effect that has a previous stable version of its model
  at this site (verified in the store): that version is the baseline and the rollback target, and
  its artifact is pinned in the store. A model's first version goes out on the cloud's rules alone.
* Inputs per step: closed aggregate windows, device events, controls (operator API, signed cloud
  commands ``paused``/``aborted``), and the set of site devices the cloud's rules make eligible.
* Outputs: the poll policy asks :meth:`GateKeeper.admit` and :meth:`GateKeeper.rollback_for`;
  decisions go to the audit log, the state file and the outbox (``decision`` records); on a halt the
  devices that ran the candidate are told over MQTT (``devices/{id}/updates``) where connected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from firmware_compat.version import try_version
from gateway.inventory.records import DeviceRecord
from gateway.manifest import Deployment, HealthChecks, parse_deployment
from gateway.rollout.eligibility import decide
from gateway.rollout.gate_store import GateStore
from gateway.rollout.gates import Control, Decision, Event, GateState, Limits, new_gate, step
from gateway.settings import GateSettings
from gateway.telemetry.window import WindowStats

log = logging.getLogger(__name__)


class GateKeeper:
    def __init__(self, settings: GateSettings, folder: Path) -> None:
        self.settings = settings
        self.store = GateStore(folder)
        self.gates: dict[str, GateState] = {}
        self.baselines: dict[str, Deployment] = {}  # candidate key -> previous stable manifest
        self.known: dict[str, Mapping[str, Any]] = {}  # every manifest seen in an accepted index
        self._events: list[Event] = []
        self._windows: list[WindowStats] = []
        self._controls: dict[str, list[Control]] = {}
        self._cloud_held: set[str] = set()
        self.version = 0  # bumps when admissions or stages change (long polls wake on it)

    # -- persistence ------------------------------------------------------------------------------

    def load(self) -> None:
        self.gates = self.store.load()
        meta = self.store.load_meta()
        self.known = dict(meta.get("known", {}))
        for key, raw in meta.get("baselines", {}).items():
            try:
                self.baselines[key] = parse_deployment(raw)
            except Exception:
                log.warning("cannot read the stored baseline manifest for %s", key)

    def _meta(self) -> dict[str, Any]:
        return {"known": self.known, "baselines": {k: dict(d.raw) for k, d in self.baselines.items()}}

    # -- inputs -------------------------------------------------------------------------------------

    def on_windows(self, windows: Sequence[WindowStats], _now: float) -> None:
        self._windows.extend(windows)

    def on_event(self, device_id: str, event: str, version: str | None) -> None:
        self._events.append(Event(device_id, event, version))

    def control(self, deployment: str, action: str, by: str, why: str) -> None:
        if deployment not in self.gates:
            raise KeyError(deployment)
        log.warning("gate %s: %s by %s: %s", deployment, action, by, why or "(no reason given)")
        self._controls.setdefault(deployment, []).append(Control(action, by, why))

    def learn(
        self,
        deployments: Sequence[Deployment],
        verified: Callable[[str], bool],
        pin: Callable[[str], None],
        now: float,
    ) -> None:
        """A new index: remember its manifests; open a gate for each new version with a baseline."""
        for d in deployments:
            self.known[d.key] = dict(d.raw)
        if not self.settings.enabled:
            return
        for d in deployments:
            if d.key in self.gates:
                continue
            baseline = self._previous_stable(d, verified)
            if baseline is None:
                continue
            self.baselines[d.key] = baseline
            pin(baseline.sha256)
            self.gates[d.key] = new_gate(d.key, d.model_id, d.version, baseline.version, self.settings, now)
            log.info("gate opened for %s (baseline %s)", d.key, baseline.version)

    def _previous_stable(self, d: Deployment, verified: Callable[[str], bool]) -> Deployment | None:
        mine = try_version(d.version)
        best: tuple[Any, Deployment] | None = None
        for raw in self.known.values():
            if raw.get("model_id") != d.model_id or raw.get("version") == d.version:
                continue
            try:
                other = parse_deployment(raw)
            except Exception:
                continue
            v = try_version(other.version)
            if mine is None or v is None or not v < mine or not verified(other.sha256):
                continue
            gate = self.gates.get(other.key)
            if gate is not None and gate.stage in ("halted", "aborted"):
                continue  # a halted version is nobody's baseline
            if best is None or v > best[0]:
                best = (v, other)
        return best[1] if best else None

    # -- what the poll policy asks -------------------------------------------------------------------

    def admit(self, candidate: Deployment, device: DeviceRecord, now: float) -> str | None:
        gate = self.gates.get(candidate.key)
        if gate is None or gate.stage == "done":
            return None
        if gate.stage in ("halted", "aborted"):
            return "halted_at_site"
        if device.device_id in gate.admitted:
            return "shadow" if gate.stage == "shadow" else None
        return "waiting_for_wave"

    def rollback_for(self, device: DeviceRecord, now: float) -> Deployment | None:
        for key, gate in self.gates.items():
            if gate.stage not in ("halted", "aborted") or device.model_version != gate.version:
                continue
            if device.device_id in gate.rollback_set or device.device_id in gate.admitted:
                return self.baselines.get(key)
        return None

    # -- one step of every gate ----------------------------------------------------------------------

    async def step(
        self,
        now: float,
        *,
        deployments: Sequence[Deployment],
        commands: Mapping[str, str],
        devices: Sequence[DeviceRecord],
        matrix: Any,
        on_decisions: Callable[[list[Decision]], Awaitable[None]],
    ) -> list[Decision]:
        windows, self._windows = self._windows, []
        events, self._events = self._events, []
        all_decisions: list[Decision] = []
        by_key = {d.key: d for d in deployments}
        for key, gate in list(self.gates.items()):
            controls = self._controls.pop(key, [])
            controls += self._cloud_controls(key, gate, commands)
            d = by_key.get(key)
            eligible: dict[str, Mapping[str, str]] = {}
            if d is not None and gate.active:
                for rec in devices:
                    if (
                        decide(deployments, rec, now, matrix).deployment == d
                        or rec.model_version == d.version
                    ):
                        eligible[rec.device_id] = rec.attrs
            limits = Limits.of(d.health if d is not None else self._health(key), self.settings)
            new, decisions = step(
                gate,
                now=now,
                limits=limits,
                eligible=eligible,
                windows=windows,
                events=events,
                controls=controls,
            )
            if new != gate:
                self.version += 1
            self.gates[key] = new
            all_decisions += decisions
        if all_decisions or windows or events:
            await asyncio.to_thread(self.store.save, self.gates, all_decisions, self._meta())
        if all_decisions:
            for dec in all_decisions:
                log.warning("gate %s wave %d: %s (%s)", dec.deployment, dec.wave, dec.action, dec.reason)
            await on_decisions(all_decisions)
        return all_decisions

    def _health(self, key: str) -> HealthChecks:
        """The health checks of a deployment no longer in the index (from the manifests seen)."""
        raw = self.known.get(key)
        try:
            return parse_deployment(raw).health if raw is not None else HealthChecks()
        except Exception:
            return HealthChecks()

    def _cloud_controls(self, key: str, gate: GateState, commands: Mapping[str, str]) -> list[Control]:
        model = key.split("@", 1)[0]
        command = commands.get(key) or commands.get(model)
        out: list[Control] = []
        if command == "paused" and key not in self._cloud_held and gate.active:
            self._cloud_held.add(key)
            out.append(Control("hold", "cloud", "signed coordinator command: paused"))
        elif command == "aborted" and gate.stage != "aborted":
            out.append(Control("abort", "cloud", "signed coordinator command: aborted"))
        elif command is None and key in self._cloud_held:
            self._cloud_held.discard(key)
            out.append(Control("release", "cloud", "coordinator command cleared"))
        return out

    def status(self) -> list[dict[str, Any]]:
        out = []
        for key, g in self.gates.items():
            last = g.decisions[-1] if g.decisions else None
            out.append(
                {
                    "deployment": key,
                    "baseline": g.baseline_version,
                    "stage": g.stage,
                    "wave": g.wave,
                    "held_by": g.held_by,
                    "admitted": len(g.admitted),
                    "ran": len(g.ran),
                    "rollback": len(g.rollback_set),
                    "last_decision": last.to_json() if last else None,
                }
            )
        return out
