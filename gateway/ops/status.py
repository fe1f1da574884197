"""The status view: what ``ota-gateway status``, ``GET /status`` and the dashboard show.

One JSON-ready dict, read from the components as they are now (the trusted clock, the index held,
each deployment's mirroring, the gates, the store, the box's health, the broker, the uplink, the
counters). It only reads; redaction of secrets (``gateway.runtime.redact``) and presentation are the
operator API's, and each figure's meaning is its component's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.broker.front import MqttFront
from gateway.core.settings import Settings
from gateway.inventory.store import Inventory
from gateway.mirror.mirror import Mirror
from gateway.rollout.keeper import GateKeeper
from gateway.runtime.health import probe
from gateway.runtime.stats import Stats
from gateway.store.artifacts import ArtifactStore
from gateway.telemetry.drift import DriftWatch
from gateway.trust.state import TrustState
from gateway.uplink.forwarder import Forwarder
from gateway.uplink.outbox import Outbox
from gateway.uplink.sinks import Sink


class StatusView:
    def __init__(
        self,
        settings: Settings,
        *,
        trust: TrustState,
        mirror: Mirror,
        store: ArtifactStore,
        gates: GateKeeper,
        inventory: Inventory,
        broker: Callable[[], MqttFront | None],
        forwarder: Forwarder,
        sinks: Sequence[Sink],
        outbox: Outbox,
        stats: Stats,
        data: Path,
        started_at: float,
        clock: Callable[[], float],
        data_id: Callable[[], str | None] = lambda: None,
        tasks: Callable[[], list[dict[str, Any]]] = list,
        drift: DriftWatch | None = None,
        samples: Callable[[], dict[str, Any]] = dict,
        connections: Callable[[], int] = lambda: 0,
    ) -> None:
        self.settings = settings
        self.trust = trust
        self.mirror = mirror
        self.store = store
        self.gates = gates
        self.inventory = inventory
        self.broker = broker
        self.forwarder = forwarder
        self.sinks = sinks
        self.outbox = outbox
        self.stats = stats
        self.data = data
        self.started_at = started_at
        self.clock = clock
        self.data_id = data_id
        self.tasks = tasks  # the supervisor's snapshot of the long-lived tasks
        self.drift = drift
        self.samples = samples  # samples for retraining: kept, sent, dropped, by reason
        self.connections = connections  # open HTTP connections, from the listeners' own counts

    def recovered(self) -> list[dict[str, Any]]:
        """Every damaged state file this run found, what it was and what was done about it."""
        return [
            *self.trust.recovered,
            *self.gates.recovered,
            *self.store.catalog.recovered,
            *self.inventory.recovered,
            *self.outbox.recovered,
            *(self.drift.recovered if self.drift else ()),
            *self.samples().get("recovered", ()),
        ]

    def status(self) -> dict[str, Any]:
        """What ``ota-gateway status`` and the dashboard show."""
        reading = self.trust.clock(self.clock())
        index = self.mirror.index
        mqtt = broker.stats() if (broker := self.broker()) else {}
        deployments = []
        for d in index.deployments if index else ():
            deployments.append(
                {
                    "model_id": d.model_id,
                    "version": d.version,
                    "sha256": d.sha256,
                    "length": d.length,
                    "mirrored": self.store.is_verified(d.sha256),
                    "progress_bytes": self.mirror.progress_bytes(d.sha256),
                    "progress": progress.to_json() if (progress := self.mirror.progress(d.sha256)) else None,
                    "target_cohort": d.target_cohort,
                    "rollout_percentage": d.rollout_percentage,
                }
            )
        return {
            "gateway": {
                "version": __version__,
                "site": self.settings.site,
                "uptime_s": round(self.clock() - self.started_at),
                "started": self.started_at,
                # Which data folder this is (gateway.runtime.instance): the CLI checks it before it trusts us.
                "data_id": self.data_id(),
                "data_dir": os.path.abspath(self.data),
                "pid": os.getpid(),
            },
            "clock": {
                "trusted": reading.trusted,
                "system": reading.system,
                "floor": reading.floor,
                "note": self.trust.advice(reading.system),
                "floor_source": self.trust.source(),
            },
            "upstream": {
                "url": self.mirror.upstream.description,
                "last_poll_ok": self.mirror.last_poll_ok,
                "last_error": self.mirror.last_error,
                "no_index": self.mirror.no_index,
            },
            "index": None
            if index is None
            else {
                "version": index.version,
                "expires": index.expires,
                "expired": index.expires <= reading.now,
                "rejected_deployments": [list(r) for r in index.rejected],
                "commands": dict(index.commands),
            },
            "trusted_keys": sorted(self.trust.trusted.signing_keys()),
            "recovered": self.recovered(),  # damaged state files found at start-up (README table)
            "safe_mode": self.gates.site.safe_mode,  # why new gates open held, or None
            "gates": self.gates.status(),
            "deployments": deployments,
            "store": {
                "verified_blobs": len(self.store.verified),
                "used_bytes": sum(i.size for i in self.store.verified.values()),
                "quota_bytes": self.settings.store.quota_bytes,
                "scrub": self.store.scrubber.report.to_json(),
                "quarantined": list(self.store.scrubber.quarantined),
            },
            "health": probe(self.data, connections=self.connections() + int(mqtt.get("connections", 0))),
            "mqtt": {
                "listen": {name: f"{h}:{p}" for name, (h, p) in broker.addresses.items()} if broker else {},
                **mqtt,
            },
            "uplink": {
                "sinks": {s.name: {"up": self.forwarder.link_up.get(s.name)} for s in self.sinks},
                "outbox": self.outbox.stats(),
            },
            "samples": self.samples(),
            "tasks": self.tasks(),
            "drift": self.drift.status() if self.drift else None,
            "counters": self.stats.snapshot(),
            "last_errors": dict(self.stats.last_error),
        }
