"""The supervisor: builds every component from the settings, starts them in order, stops them in reverse.

One process, one event loop: the device HTTP server and the operator server through aiohttp's
``AppRunner``/``TCPSite``, the mirror's poll loop, the broker, the site loop, the uplink and mDNS. This
module only wires: it hands each component the narrow objects and listeners it declares, under the data
folder's lock (:mod:`gateway.store.lock`). The jobs live elsewhere: the poll answer in :mod:`gateway.rollout.polls`,
the gates in time in :mod:`gateway.rollout.site_loop`, the status in :mod:`gateway.ops.status`, TLS in
:mod:`gateway.http.tls`, the MQTT identity check in :mod:`gateway.inventory.access`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import IO, Any

from gateway.broker.front import MqttFront
from gateway.broker.mode import mqtt_front
from gateway.bundle.importer import DEFAULT_TIMEOUT_S, Importer
from gateway.bundle.source import Shelf
from gateway.bundle.watch import ImportWatch
from gateway.core.setting_rules import parse_hostport
from gateway.core.settings import Settings
from gateway.http import listener
from gateway.http.app import build_device_app
from gateway.http.fast_downloads import FastDownloads
from gateway.http.metrics_endpoint import add_metrics_route
from gateway.http.operator import build_operator_app
from gateway.http.probes import add_probe_routes
from gateway.http.tls import server_tls
from gateway.inventory.store import Inventory
from gateway.mirror.mirror import Mirror
from gateway.mirror.store_events import StoreEvents
from gateway.mirror.upstream import Upstream
from gateway.ops.prometheus import GatewayMetrics
from gateway.ops.readiness import Readiness, listener_state
from gateway.ops.status import StatusView
from gateway.rollout.keeper import GateKeeper
from gateway.rollout.polls import PollAnswers
from gateway.rollout.site_loop import DeviceEvents, SiteLoop
from gateway.runtime import instance
from gateway.runtime.notify import Changes
from gateway.runtime.stats import Stats
from gateway.runtime.supervisor import Supervisor
from gateway.runtime.tasks import TaskGroup
from gateway.samples.desk import SampleDesk
from gateway.service.config_files import ConfigFiles
from gateway.service.listeners import serve, start_discovery
from gateway.store.artifacts import ArtifactStore
from gateway.store.lock import lock_data_dir
from gateway.telemetry.drift import DriftWatch
from gateway.telemetry.history import WindowHistory
from gateway.telemetry.ingest import Telemetry
from gateway.telemetry.trace_log import TraceLog
from gateway.trust.state import TrustState
from gateway.trust.tuf_state import make_trust_state
from gateway.uplink.assemble import uplink_from

log = logging.getLogger(__name__)


class Gateway:
    """Everything the ``serve`` command runs, started and stopped in one place."""

    def __init__(
        self, settings: Settings, files: ConfigFiles, *, clock: Callable[[], float] = time.time
    ) -> None:
        """Values only: no file is read or written here (``files`` were read by
        :meth:`from_settings`; the data folder's state is loaded in :meth:`start`, under its lock)."""
        self.settings = settings
        self.clock = clock
        self.started_at = clock()
        self.data = settings.data_path
        self.stats = Stats()
        self.tasks = TaskGroup()  # short-lived tasks (an index being judged)
        # every long-lived task: restarted, and failing ones reported
        self.supervisor = Supervisor.from_settings(settings.supervision)
        self._lock: IO[str] | None = None
        self._stack: AsyncExitStack | None = None  # what start() opened, closed in reverse by stop()
        self.http_addresses: list[Any] = []
        self.operator_addresses: list[Any] = []
        self.http_guards: list[listener.Guard] = []  # the HTTP listeners, counting their connections
        self.data_id: str | None = (
            None  # the data folder's identity (gateway.runtime.instance), read in start()
        )
        self.key_dir = self.data / "trusted-keys"
        self.trust: TrustState = make_trust_state(
            settings.trust, self.data / "trust", files.keys, settings.site, self.key_dir, files.tuf_root
        )
        self.changes = Changes()  # long polls wait on it
        self.store = ArtifactStore(
            self.data,
            quota_bytes=settings.store.quota_bytes,
            running=lambda: ((r.model_id, r.model_version or "") for r in self.inventory.live()),
            listener=StoreEvents(lambda: self.mirror, self.changes),
            stats=self.stats,
        )
        self.shelf = Shelf(files.upstream)  # lent to a bundle while it is imported
        self.inventory = Inventory(self.data / "inventory.json", max_devices=settings.devices.max_devices)
        self.site_inventory = files.site_inventory
        self.credentials = files.credentials
        self.matrix = files.matrix

        self.sinks, self.outbox, self.forwarder = uplink_from(settings, self.data, self.stats, clock)
        self.gates = GateKeeper(settings.gates, self.data / "gates")
        self.history = WindowHistory(settings.telemetry.history_windows)  # the dashboard's charts
        g = settings.gates  # the site's own trace, for `ota-gateway gate trace`
        self.trace = TraceLog(
            self.data / "traces",
            max_bytes=g.trace_max_bytes,
            keep_s=g.trace_keep_s,
            stats=self.stats,
            clock=clock,
        )
        self.telemetry = Telemetry(
            settings.telemetry,
            self.inventory,
            self.outbox,
            self.stats,
            on_event=[DeviceEvents(self.inventory, self.gates, clock), self.trace.on_event],
            on_windows=[self.gates.on_windows, self.history.on_windows, self.trace.on_windows],
            journal=settings.uplink.forward_samples,
            drift=DriftWatch.of(settings, self.outbox, self.stats, held=lambda: self.mirror.index),
        )
        self.samples = SampleDesk(settings, self.data, self.outbox, self.stats, clock)
        self.broker: MqttFront | None = None  # amqtt needs the running loop: made in start()
        self._wire_site(self.shelf)
        self.imports = ImportWatch(
            Importer(self.mirror, self.shelf),
            self.data,
            [Path(settings.mirror.import_dir)] if settings.mirror.import_dir else [],
            scan_s=settings.mirror.import_scan_s,
            timeout_s=DEFAULT_TIMEOUT_S,
        )
        self.discovery: dict[str, Any] = {}
        self._cert_sha256 = files.cert_sha256

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Callable[[], float] = time.time) -> Gateway:
        """Read the files the configuration names (blocking), then build the gateway from values."""
        return cls(settings, ConfigFiles.read(settings), clock=clock)

    def _wire_site(self, upstream: Upstream) -> None:
        """The site loop, the mirror that feeds it, and the views the APIs read."""
        s = self.settings
        self.site_loop = SiteLoop(
            s,
            gates=self.gates,
            inventory=self.inventory,
            trust=self.trust,
            store=self.store,
            telemetry=self.telemetry,
            outbox=self.outbox,
            uplink_wake=self.forwarder.wake,
            changes=self.changes,
            held_index=lambda: self.mirror.index,
            notices=lambda: self.broker,
            matrix=self.matrix,
            stats=self.stats,
            tasks=self.tasks,
            data=self.data,
            clock=self.clock,
        )
        # A new index reaches devices only through the gate keeper, once judged (see SiteLoop).
        self.mirror = Mirror(
            s,
            upstream,
            self.trust,
            self.store,
            self.stats,
            on_index=[self.site_loop.index_accepted, lambda index: self.store.catalog.hold(index.commands)],
            clock=self.clock,
        )
        self.polls = PollAnswers(
            inventory=self.inventory,
            gates=self.gates,
            trust=self.trust,
            store=self.store,
            matrix=self.matrix,
            admit_on_poll=self.site_loop.admit_on_poll,
        )
        self.status_view = StatusView(
            s,
            trust=self.trust,
            mirror=self.mirror,
            store=self.store,
            gates=self.gates,
            inventory=self.inventory,
            broker=lambda: self.broker,
            forwarder=self.forwarder,
            sinks=self.sinks,
            outbox=self.outbox,
            stats=self.stats,
            data=self.data,
            started_at=self.started_at,
            clock=self.clock,
            data_id=lambda: self.data_id,
            tasks=self.supervisor.snapshot,
            drift=self.telemetry.drift,
            samples=self.samples.status,
            connections=lambda: sum(g.live for g in self.http_guards),
        )
        self.readiness = Readiness(
            trust=self.trust,
            mirror=self.mirror,
            data=self.data,
            listeners=lambda: listener_state(
                s, self.http_addresses, self.operator_addresses, self.broker.addresses if self.broker else {}
            ),
            clock=self.clock,
            failing=self.supervisor.failing,
        )
        self.metrics = GatewayMetrics(self.status_view, self.readiness)  # its own registry

    async def start(self) -> None:
        """Open everything in order; a failure closes what was opened, in reverse, and re-raises.
        The data folder's lock comes first: nothing before it reads or writes the folder."""
        async with AsyncExitStack() as stack:
            self._lock = lock_data_dir(self.data)
            stack.callback(self._unlock)
            stack.push_async_callback(asyncio.to_thread, instance.remove_record, self.data)
            await self._open_state(stack)
            await self._open_servers(stack)
            await self._open_tasks(stack)
            self._stack = stack.pop_all()

    def _unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    async def _open_state(self, stack: AsyncExitStack) -> None:
        """The data folder's state, loaded (and repaired where damaged) under its lock."""
        log.info("data folder %s locked; loading its state", self.data.resolve())
        self.data_id = await asyncio.to_thread(instance.ensure_data_id, self.data)
        listener.ensure_descriptors(self.settings)
        await asyncio.to_thread(self.key_dir.mkdir, exist_ok=True)
        await asyncio.to_thread(self.outbox.open)
        stack.push_async_callback(asyncio.to_thread, self.outbox.close)
        stack.push_async_callback(self.forwarder.close)
        stack.push_async_callback(self.store.catalog.flush, force=True)
        await self.store.open()
        stack.push_async_callback(self.store.close)
        await asyncio.to_thread(self.inventory.load)
        stack.push_async_callback(lambda: self.inventory.flush(self.clock(), force=True))
        await asyncio.to_thread(self.gates.load)
        self.inventory.apply_file(self.site_inventory, self.clock())
        await self.mirror.open()
        stack.push_async_callback(self.mirror.close)
        await stack.enter_async_context(self.samples)
        if self.mirror.index is not None:
            log.info("judging index version %d before the device API listens", self.mirror.index.version)
            await self.site_loop.enter_index(self.mirror.index)  # judged before the device API listens

    async def _open_servers(self, stack: AsyncExitStack) -> None:
        """The device API, the operator API (then ``gateway.json``, so clients find us), the broker."""
        device_app = build_device_app(
            self.settings,
            credentials=self.credentials,
            inventory=self.inventory,
            stats=self.stats,
            clock=self.clock,
            polls=self.polls,
            changes=self.changes,
            ingest=self.telemetry,
            store=self.store,
            held_index=lambda: self.mirror.index,
            held_keys=lambda: self.trust.trusted.key_list,
            held_tuf=self.trust.metadata,
            held_site=lambda site: self.mirror.children.held.get(site),
            relay=self.outbox,
            samples=self.samples,
        )
        add_probe_routes(device_app, self.readiness, self.settings.site)
        host, port = parse_hostport(self.settings.http.listen)
        self.http_addresses = await serve(
            stack,
            device_app,
            host,
            port,
            self.settings.http,
            self.stats,
            server_tls(self.settings),
            guards=self.http_guards,
            fast=FastDownloads.of(device_app),
        )
        if self.settings.operator.listen:
            operator_app = build_operator_app(
                self.settings,
                stats=self.stats,
                inventory=self.inventory,
                store=self.store,
                gates=self.gates,
                controls=self.site_loop,
                status_view=self.status_view.status,
                history=self.history,
                drift=self.telemetry.drift,
            )
            add_probe_routes(operator_app, self.readiness, self.settings.site)
            add_metrics_route(operator_app, self.metrics.exposition)
            host, port = parse_hostport(self.settings.operator.listen)
            self.operator_addresses = await serve(
                stack,
                operator_app,
                host,
                port,
                self.settings.http,
                self.stats,
                None,
                "operator",
                guards=self.http_guards,
            )
        record = instance.Record.of(
            self.operator_addresses, self.settings.site, self.data_id, self.started_at
        )
        await asyncio.to_thread(instance.write_record, self.data, record)  # the CLI finds us by it
        log.info(
            "operator API on %s: %s written, client commands find the gateway",
            record.operator or "off",
            instance.RECORD_NAME,
        )
        lab_mode = self.settings.mqtt.lab_mode
        self.broker = mqtt_front(
            self.settings,
            lambda user, pw, cn: self.credentials.mqtt_allows(user, pw, cn, lab_mode=lab_mode),
            self.samples.mqtt_hook(self.telemetry.mqtt_message),
            self.supervisor.supervise,
        )
        await self.broker.start()
        stack.push_async_callback(self.broker.stop)
        log.info("listening: device API, operator API, MQTT broker")

    async def _open_tasks(self, stack: AsyncExitStack) -> None:
        """mDNS and the long-lived tasks, under the supervisor (closed first on the way down)."""
        stack.push_async_callback(self.tasks.close)
        if self.settings.discovery.enabled:
            mqtt = self.broker.addresses.get("tcp") if self.broker else None
            self.discovery = await start_discovery(
                stack,
                self.settings,
                self.inventory,
                self.clock,
                self.supervisor.supervise,
                http_port=int(self.http_addresses[0][1]) if self.http_addresses else 0,
                mqtt_port=int(mqtt[1]) if mqtt else None,
                cert_sha256=self._cert_sha256,
            )
        stack.push_async_callback(self.trace.close)  # after its task has stopped
        stack.push_async_callback(self.supervisor.close)  # first on the way down: before mDNS stops
        self.supervisor.supervise("mirror-poll", self.mirror.run)
        self.supervisor.supervise("site-trace", self.trace.run)
        self.supervisor.supervise("bundle-imports", self.imports.run)
        self.supervisor.supervise("site-loop", self.site_loop.run)
        self.supervisor.supervise("readiness-log", self.readiness.watch)
        store = self.settings.store
        if store.scrub_bytes_per_s > 0:
            scrub = lambda: self.store.scrubber.scrub_forever(store.scrub_bytes_per_s, store.scrub_interval_s)  # noqa: E731
            self.supervisor.supervise("blob-scrub", scrub)
        self.supervisor.supervise("outbox-expiry", lambda: self.outbox.expire_forever(self.clock))
        if self.sinks:
            self.supervisor.supervise("uplink", self.forwarder.run)
        if self.settings.samples.enabled:
            self.supervisor.supervise("samples", self.samples.run)

    async def stop(self) -> None:
        """Close what start() opened, in reverse: the tasks, the servers, then the components they
        used, the record and the lock. Also ends tasks supervised before start (the watchdog)."""
        stack, self._stack = self._stack, None
        try:
            if stack is not None:
                await stack.aclose()
        except Exception:  # every step still ran (the stack goes on past a failed one)
            log.exception("error while stopping")
        finally:
            await self.supervisor.close()
