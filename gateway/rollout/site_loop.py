"""The site loop: the gate keeper's I/O side in time, and what follows each of its transitions.

* Every few seconds (:meth:`SiteLoop.run`): close the metric windows, step the gates, and once per
  ``uplink.report_interval_s`` put one site report in the outbox.
* A newly accepted index (:meth:`SiteLoop.index_accepted`, the mirror's listener) goes into effect
  only through the gate keeper (:meth:`SiteLoop.enter_index`): judged and durable before any poll
  can see it (see :mod:`gateway.rollout.keeper` and :mod:`gateway.core.site`). If that fails (the
  disk), the next step tries again.
* An operator's control (:meth:`SiteLoop.control_gate`) is applied at once, the same way.
* After every published transition (:meth:`SiteLoop._carry_out`) it carries out the rest of the
  effects the core returned (:mod:`gateway.core.site_effects`), in their order: rollback targets
  pinned in the store, long polls woken, the uplink woken for the decisions journaled, and, after a
  halt or an abort, each rollback notice (its recipients and JSON decided by the transition)
  published to those of its recipients the broker has connected.

It leaves to others: the decisions and who is told what (``gateway.core.site`` through the
keeper), the poll answer (``gateway.rollout.polls``), the transport of reports and notices (the
uplink, the broker).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from firmware_compat.matrix import CompatMatrix
from gateway.core.device import DeviceRecord
from gateway.core.events import DeviceEvent
from gateway.core.manifest import Deployment
from gateway.core.settings import Settings
from gateway.core.site_effects import Effects, Notify, PinRollbackTargets, WakePolls, WakeUplink
from gateway.inventory.store import Inventory
from gateway.rollout.keeper import GateKeeper
from gateway.runtime.health import probe
from gateway.runtime.notify import Changes
from gateway.runtime.stats import Stats
from gateway.runtime.tasks import TaskGroup
from gateway.store.artifacts import ArtifactStore
from gateway.telemetry.ingest import Telemetry
from gateway.trust.index import SiteIndex
from gateway.trust.state import TrustState
from gateway.uplink.outbox import Outbox
from gateway.uplink.report import SiteReport

log = logging.getLogger(__name__)


class Notices(Protocol):
    """What the loop asks of the broker to tell devices to roll back."""

    def connected(self, device_id: str) -> bool: ...

    async def publish(self, topic: str, payload: bytes) -> None: ...


class DeviceEvents:
    """A device's event (over HTTP or MQTT): recorded in the inventory, handed to the gates."""

    def __init__(self, inventory: Inventory, gates: GateKeeper, clock: Callable[[], float]) -> None:
        self.inventory = inventory
        self.gates = gates
        self.clock = clock

    def __call__(self, e: DeviceEvent) -> None:
        self.inventory.event(e.device_id, e.event, model_id=e.model_id, version=e.version, now=self.clock())
        self.gates.on_event(e.device_id, e.event, e.version)
        if e.reason:
            log.info("device %s: %s %s@%s: %s", e.device_id, e.event, e.model_id, e.version, e.reason)


class SiteLoop:
    def __init__(
        self,
        settings: Settings,
        *,
        gates: GateKeeper,
        inventory: Inventory,
        trust: TrustState,
        store: ArtifactStore,
        telemetry: Telemetry,
        outbox: Outbox,
        uplink_wake: asyncio.Event,
        changes: Changes,
        held_index: Callable[[], SiteIndex | None],
        notices: Callable[[], Notices | None],
        matrix: CompatMatrix | None,
        stats: Stats,
        tasks: TaskGroup,
        data: Path,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.gates = gates
        self.inventory = inventory
        self.trust = trust
        self.store = store
        self.telemetry = telemetry
        self.outbox = outbox
        self.uplink_wake = uplink_wake
        self.changes = changes
        self.held_index = held_index
        self.notices = notices
        self.matrix = matrix
        self.stats = stats
        self.tasks = tasks
        self.data = data
        self.clock = clock
        self._last_report = 0.0

    async def run(self) -> None:
        """Every few seconds: close metric windows and step the gates; once per interval, put one
        site report in the outbox."""
        interval = self.settings.uplink.report_interval_s
        while True:
            await asyncio.sleep(self.settings.gate_step_s)
            now = self.clock()
            try:
                await self.telemetry.close_windows(now)
                await self.step_gates(now)
                if now - self._last_report >= interval:
                    self._last_report = now
                    await self.report(now)
                    await self.inventory.flush(now)
            except Exception as exc:  # one bad round must not stop the reports and the gates for good
                log.exception("site report round failed")
                self.stats.error("report.errors", repr(exc))

    def index_accepted(self, index: SiteIndex) -> None:
        """The mirror's listener: judge the new index off the mirror's call."""
        self.tasks.spawn(self.enter_index(index), name="judge index")

    async def enter_index(self, index: SiteIndex) -> None:
        """Put an accepted index into effect through the gate keeper: judged, durable, published."""
        now = self.trust.clock(self.clock()).now
        effects = await self.gates.apply_index(
            index.version,
            index.deployments,
            index.commands,
            now=now,
            verified=self.store.is_verified,
            devices=self.inventory.live(),
            matrix=self.matrix,
            durable=self._journal_decisions,
        )
        await self._carry_out(effects)

    async def admit_on_poll(self, device: DeviceRecord, candidate: Deployment, now: float) -> bool:
        """A device told ``waiting_for_wave`` asks again: its wave admits it now if it has room.
        True when the site changed (its answer may differ). The usual poll (a full wave) costs a
        look at the gate in memory, no pass over the site's devices."""
        size = len(self.inventory.devices)
        if not self.gates.may_admit(device.device_id, candidate.key, size):
            return False
        effects = await self.gates.admit_on_poll(
            device,
            candidate,
            now=self.trust.clock(now).now,
            devices=self.inventory.live(),
            site_size=size,
            matrix=self.matrix,
            durable=self._journal_decisions,
        )
        await self._carry_out(effects)
        return effects.changed

    async def step_gates(self, now: float) -> None:
        index = self.held_index()
        held = self.gates.site.index_version
        if index is not None and (held is None or index.version > held):
            await self.enter_index(index)  # an earlier attempt failed (e.g. the disk): again
        drift = self.telemetry.drift
        effects = await self.gates.tick(
            self.trust.clock(now).now,
            devices=self.inventory.live(),
            matrix=self.matrix,
            durable=self._journal_decisions,
            drift=drift.tracker.gate_view() if drift is not None and drift.settings.enabled else None,
        )
        await self._carry_out(effects)

    async def control_gate(self, deployment: str, action: str, by: str, why: str) -> None:
        """An operator's control, at once. KeyError: no such gate; ControlRefused: why it would do
        nothing."""
        effects = await self.gates.control(
            deployment,
            action,
            by,
            why,
            now=self.trust.clock(self.clock()).now,
            devices=self.inventory.live(),
            matrix=self.matrix,
            durable=self._journal_decisions,
        )
        await self._carry_out(effects)

    async def _journal_decisions(self, effects: Effects) -> None:
        decisions = [d.to_json() for d in effects.decisions]
        await self.outbox.append("decision", {"decisions": decisions}, self.clock())

    async def _carry_out(self, effects: Effects) -> None:
        """The effects of a published transition after ``Publish`` (the keeper carried out those
        before it), in order; a notice goes to those of its recipients the broker has connected."""
        notices = self.notices()
        for step in effects.steps:
            if isinstance(step, PinRollbackTargets):
                self.store.catalog.pin_rollback_targets(step.baselines, step.halted)
            elif isinstance(step, WakePolls):
                self.changes.notify()
            elif isinstance(step, WakeUplink):
                self.uplink_wake.set()
            elif isinstance(step, Notify) and notices is not None:
                for device_id in step.recipients:
                    if notices.connected(device_id):
                        await notices.publish(step.topic(device_id), step.payload)

    async def report(self, now: float) -> None:
        changes, dropped = self.inventory.drain_changes()
        live = self.inventory.live()
        report = SiteReport(
            site=self.settings.site,
            at=now,
            inventory_changes=changes,
            inventory_changes_dropped=dropped,
            health=await asyncio.to_thread(probe, self.data),
            devices={
                "known": len(self.inventory.devices),
                "live": len(live),
                "blocked_by_firmware": sum(1 for r in live if r.blocked_by_firmware),
            },
        )
        for kind, body in report.records():
            await self.outbox.append(kind, body, now)
        self.uplink_wake.set()
