"""The supervisor: builds every component from the settings, starts them in order, stops them in reverse.

One process, one event loop: the device HTTP server and the operator server through aiohttp's
``AppRunner``/``TCPSite``, the mirror's poll loop, the broker, the site loop, the uplink and mDNS.
This module only wires: it hands each component the narrow objects and listeners it declares, under
the data folder's lock (:mod:`gateway.store.lock`). The jobs live elsewhere: the poll answer in
:mod:`gateway.polls`, the gates in time in :mod:`gateway.site_loop`, the status in
:mod:`gateway.status_view`, TLS in :mod:`gateway.http.tls`, the MQTT identity check in
:mod:`gateway.access`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from gateway import instance
from gateway.access import Credentials
from gateway.broker.front import MqttFront
from gateway.broker.mode import mqtt_front
from gateway.bundle.importer import DEFAULT_TIMEOUT_S, Importer
from gateway.bundle.source import Shelf
from gateway.bundle.watch import ImportWatch
from gateway.core.errors import ConfigError
from gateway.core.settings import Settings, parse_hostport
from gateway.discovery.advertise import Advertiser, cert_fingerprint
from gateway.discovery.browse import DeviceBrowser
from gateway.discovery.net import open_lan
from gateway.http import listener
from gateway.http.app import build_device_app
from gateway.http.metrics_endpoint import add_metrics_route
from gateway.http.operator import build_operator_app
from gateway.http.probes import add_probe_routes
from gateway.http.tls import server_tls
from gateway.inventory.store import Inventory, load_inventory_file
from gateway.mirror.mirror import Mirror
from gateway.mirror.upstream import Upstream, upstream_from
from gateway.notify import Changes
from gateway.polls import PollAnswers
from gateway.prometheus import GatewayMetrics
from gateway.readiness import Readiness, listener_state
from gateway.rollout.keeper import GateKeeper
from gateway.sdnotify import Notifier, watchdog_loop
from gateway.settings import load_matrix
from gateway.site_loop import DeviceEvents, SiteLoop
from gateway.stats import Stats
from gateway.status_view import StatusView
from gateway.store.artifacts import ArtifactStore
from gateway.store.lock import lock_data_dir
from gateway.tasks import TaskGroup
from gateway.telemetry.history import WindowHistory
from gateway.telemetry.ingest import Telemetry
from gateway.trust.keys import load_trusted_keys
from gateway.trust.tuf_state import make_trust_state
from gateway.uplink.assemble import uplink_from

log = logging.getLogger(__name__)


class _StoreEvents:
    """The store's listener (:class:`gateway.store.events.StoreListener`). The store is made
    before the mirror that needs it, so this asks for the mirror when an event comes (after
    ``start``), not when it is made."""

    def __init__(self, mirror: Callable[[], Mirror], changes: Changes) -> None:
        self._mirror = mirror
        self._changes = changes

    def retry_after_s(self, sha256: str) -> int:
        return self._mirror().retry_after_s(sha256)

    def on_miss(self, sha256: str) -> None:
        self._mirror().on_miss(sha256)

    def on_verified(self, sha256: str) -> None:
        self._changes.notify()  # long polls waiting for this blob wake


class Gateway:
    """Everything the ``serve`` command runs, started and stopped in one place."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.started_at = clock()
        self.data = settings.data_path
        self.stats = Stats()
        self.tasks = TaskGroup()
        self._lock: IO[str] | None = None
        self._runners: list[web.AppRunner] = []
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self.http_addresses: list[Any] = []
        self.operator_addresses: list[Any] = []
        self.data_id: str | None = None  # the data folder's identity (gateway.instance), read in start()
        self.key_dir = self.data / "trusted-keys"
        keys = load_trusted_keys([Path(p) for p in settings.trust.trusted_keys], "configuration")
        self.trust = make_trust_state(settings.trust, self.data / "trust", keys, settings.site, self.key_dir)
        self.changes = Changes()  # long polls wait on it
        self.store = ArtifactStore(
            self.data,
            quota_bytes=settings.store.quota_bytes,
            running=lambda: ((r.model_id, r.model_version or "") for r in self.inventory.live()),
            listener=_StoreEvents(lambda: self.mirror, self.changes),
            stats=self.stats,
        )
        self.shelf = Shelf(
            upstream_from(settings.mirror, site=settings.site)
        )  # lent to a bundle while it is imported
        devices = settings.devices
        self.inventory = Inventory(self.data / "inventory.json", max_devices=devices.max_devices)
        self.site_inventory = (
            load_inventory_file(Path(devices.inventory_file)) if devices.inventory_file else {}
        )
        self.credentials = Credentials(devices, self.site_inventory)
        self.matrix = load_matrix(Path(devices.compat_matrix)) if devices.compat_matrix else None

        self.sinks, self.outbox, self.forwarder = uplink_from(settings, self.data, self.stats, clock)
        self.gates = GateKeeper(settings.gates, self.data / "gates")
        self.history = WindowHistory(settings.telemetry.history_windows)  # the dashboard's charts
        self.telemetry = Telemetry(
            settings.telemetry,
            self.inventory,
            self.outbox,
            self.stats,
            on_event=DeviceEvents(self.inventory, self.gates, clock),
            on_windows=[self.gates.on_windows, self.history.on_windows],
            journal=settings.uplink.forward_samples,
        )
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
        self._cert_sha256 = (
            cert_fingerprint(Path(settings.http.tls_cert).read_bytes()) if settings.http.tls_cert else None
        )

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
            on_index=[self.site_loop.index_accepted, lambda index: self.store.hold(index.commands)],
            clock=self.clock,
        )
        self.polls = PollAnswers(
            inventory=self.inventory,
            gates=self.gates,
            trust=self.trust,
            store=self.store,
            matrix=self.matrix,
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
        )
        self.readiness = Readiness(
            trust=self.trust,
            mirror=self.mirror,
            data=self.data,
            listeners=lambda: listener_state(
                s, self.http_addresses, self.operator_addresses, self.broker.addresses if self.broker else {}
            ),
            clock=self.clock,
        )
        self.metrics = GatewayMetrics(self.status_view, self.readiness)  # its own registry

    async def start(self) -> None:
        self._lock = lock_data_dir(self.data)
        self.data_id = await asyncio.to_thread(instance.ensure_data_id, self.data)
        listener.ensure_descriptors(self.settings)
        self.key_dir.mkdir(exist_ok=True)
        await asyncio.to_thread(self.outbox.open)
        await self.store.open()
        self._closers.append(self.store.close)
        await asyncio.to_thread(self.inventory.load)
        await asyncio.to_thread(self.gates.load)
        self.inventory.apply_file(self.site_inventory, self.clock())
        await self.mirror.open()
        self._closers.append(self.mirror.close)
        if self.mirror.index is not None:
            await self.site_loop.enter_index(self.mirror.index)  # judged before the device API listens

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
        )
        add_probe_routes(device_app, self.readiness, self.settings.site)
        host, port = parse_hostport(self.settings.http.listen)
        self.http_addresses = await self._serve(device_app, host, port, server_tls(self.settings))
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
            )
            add_probe_routes(operator_app, self.readiness, self.settings.site)
            add_metrics_route(operator_app, self.metrics.exposition)
            host, port = parse_hostport(self.settings.operator.listen)
            self.operator_addresses = await self._serve(operator_app, host, port, None, "operator")
        lab_mode = self.settings.mqtt.lab_mode
        self.broker = mqtt_front(
            self.settings,
            lambda user, pw, cn: self.credentials.mqtt_allows(user, pw, cn, lab_mode=lab_mode),
            lambda device, topic, payload: self.telemetry.mqtt_message(device, topic, payload, self.clock()),
        )
        await self.broker.start()
        self._closers.append(self.broker.stop)
        self.tasks.spawn(self.mirror.run(), name="mirror poll")
        self.tasks.spawn(self.imports.run(), name="bundle imports")
        if self.settings.discovery.enabled:
            await self._start_discovery()
        self.tasks.spawn(self.site_loop.run(), name="site report")
        if self.settings.store.scrub_bytes_per_s > 0:
            scrub = self.store.scrub_forever(
                self.settings.store.scrub_bytes_per_s, self.settings.store.scrub_interval_s
            )
            self.tasks.spawn(scrub, name="blob scrub")
        if self.sinks:
            self.tasks.spawn(self.forwarder.run(), name="uplink")
        record = instance.Record.of(
            self.operator_addresses, self.settings.site, self.data_id, self.started_at
        )
        await asyncio.to_thread(instance.write_record, self.data, record)  # the CLI finds us by it

    async def _start_discovery(self) -> None:
        """Advertise the device API and the broker over mDNS; browse devices into the inventory."""
        s = self.settings
        lan = open_lan(s.discovery)
        self._closers.append(lan.close)
        http_port = int(self.http_addresses[0][1]) if self.http_addresses else 0
        mqtt = self.broker.addresses.get("tcp") if self.broker else None
        mqtt_port = int(mqtt[1]) if mqtt else None
        tls = bool(s.http.tls_cert)
        advertiser = Advertiser(
            s.discovery,
            site=s.site,
            http_port=http_port,
            tls=tls,
            mqtt_port=mqtt_port,
            cert_sha256=self._cert_sha256,
            lan=lan,
        )
        browser = DeviceBrowser(s.discovery, self.inventory, self.clock, lan=lan)
        await advertiser.start()
        self._closers.append(advertiser.stop)
        await browser.start()
        self._closers.append(browser.stop)
        self.discovery = {"advertiser": advertiser, "browser": browser}

    async def _serve(
        self, app: web.Application, host: str, port: int, tls: ssl.SSLContext | None, name: str = "http"
    ) -> list[Any]:
        limits = listener.HttpLimits.from_settings(self.settings.http)
        if name == "operator":  # same timeouts, a smaller cap
            limits = replace(
                limits, max_connections=min(limits.max_connections, listener.OPERATOR_MAX_CONNECTIONS)
            )
        try:
            runner, addresses = await listener.start_http(
                app, host, port, name=name, limits=limits, stats=self.stats, tls=tls
            )
        except OSError as exc:
            raise ConfigError(
                "configuration", f"listen {host}:{port}", f"a free address ({exc.strerror})"
            ) from exc
        self._runners.append(runner)
        return addresses

    async def stop(self) -> None:
        """Reverse order: background loops, servers, then the components they used."""
        await self.tasks.close()
        for runner in reversed(self._runners):
            await runner.cleanup()
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:
                log.exception("error while stopping")
        await self.forwarder.close()
        await self.store.flush(force=True)
        await self.inventory.flush(self.clock(), force=True)
        await asyncio.to_thread(self.outbox.close)
        if self._lock is not None:
            await asyncio.to_thread(instance.remove_record, self.data)
            self._lock.close()
            self._lock = None


async def run_until_signalled(gateway: Gateway, on_started: Callable[[Gateway], None] | None = None) -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    notifier = Notifier.from_env()  # systemd Type=notify; nothing outside systemd
    # Fed from the loop during start-up too (the blobs are re-hashed in worker threads meanwhile).
    gateway.tasks.spawn(watchdog_loop(notifier, gateway.readiness.status_line), name="systemd watchdog")
    await gateway.start()
    try:
        if on_started is not None:
            on_started(gateway)
        notifier.ready(await gateway.readiness.status_line())
        await stop.wait()
    finally:
        log.info("stopping")
        notifier.stopping()
        await gateway.stop()
        notifier.close()
