"""The supervisor: builds every component from the settings, starts them in order, stops them in reverse.

One process, one event loop: the device HTTP server and the operator server through aiohttp's
``AppRunner``/``TCPSite``, the mirror's poll loop, and (as they land) the broker, the uplink and
mDNS. The data folder is locked (``flock``) so two gateways, or a ``cache prune`` run by hand, never
write it at once.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

from aiohttp import web

from gateway import __version__
from gateway.access import Credentials
from gateway.broker.server import Broker, mqtt_settings
from gateway.core import policy
from gateway.core.errors import ConfigError, StorageError
from gateway.core.gates import Action
from gateway.core.settings import Settings, parse_hostport
from gateway.core.site import Effects
from gateway.discovery.advertise import Advertiser, cert_fingerprint
from gateway.discovery.browse import DeviceBrowser
from gateway.discovery.net import open_lan
from gateway.health import probe
from gateway.http import listener
from gateway.http.app import build_device_app
from gateway.http.operator import build_operator_app
from gateway.inventory.store import Inventory, load_inventory_file
from gateway.mirror.mirror import Mirror
from gateway.mirror.upstream import upstream_from
from gateway.notify import Changes
from gateway.report import SiteReport
from gateway.rollout.keeper import GateKeeper
from gateway.settings import load_matrix
from gateway.stats import Stats
from gateway.store.artifacts import ArtifactStore
from gateway.tasks import TaskGroup
from gateway.telemetry.ingest import Telemetry
from gateway.trust.index import SiteIndex
from gateway.trust.keys import load_trusted_keys
from gateway.trust.state import TrustState
from gateway.uplink.forwarder import Forwarder
from gateway.uplink.outbox import Outbox
from gateway.uplink.sinks import HttpSink, MqttBridge, Sink

log = logging.getLogger(__name__)

STOP_ACTIONS = (Action.HALT, Action.ABORT)
LOCK_NAME = ".lock"


def lock_data_dir(data: Path) -> IO[str]:
    """Hold an exclusive lock on the data folder for the life of the process."""
    try:
        data.mkdir(parents=True, exist_ok=True)
        f = (data / LOCK_NAME).open("a+")
    except OSError as exc:
        raise ConfigError("configuration", "data_dir", f"a writable folder ({data}: {exc.strerror})") from exc
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        f.close()
        raise StorageError(f"{data} is in use by another gateway process", path=str(data)) from exc
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def data_dir_in_use(data: Path) -> bool:
    try:
        with (data / LOCK_NAME).open("a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False


def _server_tls(settings: Settings) -> ssl.SSLContext | None:
    s = settings.http
    if not s.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(s.tls_cert, s.tls_key)
        if s.client_ca:
            ctx.load_verify_locations(s.client_ca)
            ctx.verify_mode = ssl.CERT_OPTIONAL if settings.devices.access != "mtls" else ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "configuration", "http.tls_cert", f"a readable PEM certificate and key ({exc})"
        ) from exc
    return ctx


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
        self.key_dir = self.data / "trusted-keys"
        keys = load_trusted_keys([Path(p) for p in settings.trust.trusted_keys], "configuration")
        self.trust = TrustState(
            self.data / "trust",
            keys,
            settings.site,
            settings.trust.min_valid_time,
            key_dir=self.key_dir,
            max_future_skew_s=settings.trust.max_future_skew_s,
        )
        self.store = ArtifactStore(
            self.data,
            quota_bytes=settings.store.quota_bytes,
            running=lambda: ((r.model_id, r.model_version or "") for r in self.inventory.live()),
        )
        self.mirror = Mirror(
            settings, upstream_from(settings.mirror), self.trust, self.store, self.stats, clock=clock
        )
        devices = settings.devices
        self.inventory = Inventory(self.data / "inventory.json", max_devices=devices.max_devices)
        self.site_inventory = (
            load_inventory_file(Path(devices.inventory_file)) if devices.inventory_file else {}
        )
        self.credentials = Credentials(devices, self.site_inventory)
        self.matrix = load_matrix(Path(devices.compat_matrix)) if devices.compat_matrix else None
        self.changes = Changes()  # long polls wait on it
        self.render_cache: dict[Any, tuple[bytes, str]] = {}  # see gateway.http.devices.render
        self._last_report = 0.0
        # A new index reaches devices only through the gate keeper, once judged (see _enter_index).
        self.mirror.listeners.append(self._index_accepted)
        self.mirror.listeners.append(lambda index: self.store.hold(index.commands))
        self.store.on_verified = lambda _sha: self.changes.notify()

        up = settings.uplink
        self.sinks: list[Sink] = []
        if up.ingest_url:
            self.sinks.append(
                HttpSink(up.ingest_url, up.ingest_token, settings.site, ca_bundle=settings.mirror.ca_bundle)
            )
        if up.mqtt_url:
            try:
                self.sinks.append(MqttBridge(up.mqtt_url, settings.site, ca_bundle=settings.mirror.ca_bundle))
            except ValueError as exc:
                raise ConfigError(
                    "configuration", "uplink.mqtt_url", "mqtt://user:pass@host:port or mqtts://..."
                ) from exc
        self.outbox = Outbox(
            self.data / "outbox.sqlite",
            max_bytes=up.outbox_max_bytes,
            max_age_s=up.outbox_max_age_s,
            sinks=[s.name for s in self.sinks] or ["none"],
            open_now=False,  # opened in start(), under the data folder's lock
        )
        self.forwarder = Forwarder(
            self.outbox,
            self.sinks,
            self.stats,
            retry_initial_s=settings.mirror.retry_initial_s,
            retry_max_s=settings.mirror.retry_max_s,
            idle_s=up.report_interval_s,
            clock=clock,
        )
        self.telemetry = Telemetry(
            settings.telemetry,
            self.inventory,
            self.outbox,
            self.stats,
            on_event=self.on_device_event,
            journal=up.forward_samples,
        )
        self.broker: Broker | None = None  # amqtt needs the running loop: made in start()
        self.gates = GateKeeper(settings.gates, self.data / "gates")
        self.discovery: dict[str, Any] = {}
        self._cert_sha256 = (
            cert_fingerprint(Path(settings.http.tls_cert).read_bytes()) if settings.http.tls_cert else None
        )
        self.telemetry.listeners.append(self.gates.on_windows)

    async def start(self) -> None:
        self._lock = lock_data_dir(self.data)
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
            await self._enter_index(self.mirror.index)  # judged before the device API listens

        device_app = build_device_app(self)
        host, port = parse_hostport(self.settings.http.listen)
        self.http_addresses = await self._serve(device_app, host, port, _server_tls(self.settings))
        if self.settings.operator.listen:
            host, port = parse_hostport(self.settings.operator.listen)
            self.operator_addresses = await self._serve(
                build_operator_app(self), host, port, None, "operator"
            )
        self.broker = Broker(
            mqtt_settings(self.settings),
            self.mqtt_authenticate,
            lambda device, topic, payload: self.telemetry.mqtt_message(device, topic, payload, self.clock()),
        )
        await self.broker.start()
        self._closers.append(self.broker.stop)
        self.tasks.spawn(self.mirror.run(), name="mirror poll")
        if self.settings.discovery.enabled:
            await self._start_discovery()
        self.tasks.spawn(self._report_loop(), name="site report")
        if self.settings.store.scrub_bytes_per_s > 0:
            scrub = self.store.scrub_forever(
                self.settings.store.scrub_bytes_per_s, self.settings.store.scrub_interval_s
            )
            self.tasks.spawn(scrub, name="blob scrub")
        if self.sinks:
            self.tasks.spawn(self.forwarder.run(), name="uplink")

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
        limits = listener.Limits.from_settings(self.settings.http)
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
            self._lock.close()
            self._lock = None

    # -- the device API's decisions (memory only, no I/O) -------------------------------------------

    def answer_for(self, device_id: str) -> policy.PollAnswer:
        """What this device may install now (see :mod:`gateway.core.policy`)."""
        device = self.inventory.get(device_id)
        if device is None:
            return policy.PollAnswer(None, "unknown_device")
        site = self.gates.site  # the index in effect: every deployment in it judged
        reading = self.trust.clock(self.clock())
        return policy.answer(
            deployments=[d for d in site.deployments if d.end_time is None or d.end_time > reading.now],
            commands=site.commands,
            device=device,
            now=reading.now,
            clock_trusted=reading.trusted,
            verified=self.store.is_verified,
            matrix=self.matrix,
            gates=self.gates,
        )

    def mqtt_authenticate(self, user: str | None, password: str | None, cert_cn: str | None) -> bool:
        """The broker's identity check, from the same device credentials as HTTP (gateway.access)."""
        return self.credentials.mqtt_allows(user, password, cert_cn, lab_mode=self.settings.mqtt.lab_mode)

    async def _report_loop(self) -> None:
        """Every few seconds: close metric windows and step the gates; once per interval, put one
        site report in the outbox."""
        interval = self.settings.uplink.report_interval_s
        window = self.settings.telemetry.window_s
        while True:
            await asyncio.sleep(min(interval, window, 5.0))
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

    def _index_accepted(self, index: SiteIndex) -> None:
        self.tasks.spawn(self._enter_index(index), name="judge index")

    async def _enter_index(self, index: SiteIndex) -> None:
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

    async def step_gates(self, now: float) -> None:
        index = self.mirror.index
        held = self.gates.site.index_version
        if index is not None and (held is None or index.version > held):
            await self._enter_index(index)  # an earlier attempt failed (e.g. the disk): again
        effects = await self.gates.tick(
            self.trust.clock(now).now,
            devices=self.inventory.live(),
            matrix=self.matrix,
            durable=self._journal_decisions,
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
        """What follows a published transition: rollback pins, long-poll wake-ups, MQTT notices."""
        site = self.gates.site
        self.store.pin_rollback_targets(site.baselines, [k for k, g in site.gates.items() if g.stopped])
        if effects.changed:
            self.changes.notify()
        if effects.decisions:
            self.forwarder.wake.set()
        if self.broker is None or not any(d.action in STOP_ACTIONS for d in effects.decisions):
            return
        for device in self.inventory.live():
            back = self.gates.rollback_for(device, self.clock())
            if back is not None and self.broker.connected(device.device_id):
                note: dict[str, Any] = {
                    "rollback": True,
                    "model_id": back.model_id,
                    "version": back.to.version if back.to else None,
                    "poll": True,
                }
                if back.to is None:
                    note["previous_slot"] = True  # a first version halted: go back to the previous slot
                await self.broker.publish(f"devices/{device.device_id}/updates", json.dumps(note).encode())

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
        self.forwarder.wake.set()

    def on_device_event(
        self, device_id: str, event: str, model_id: str | None, version: str | None, reason: str | None
    ) -> None:
        self.inventory.event(device_id, event, model_id=model_id, version=version, now=self.clock())
        self.gates.on_event(device_id, event, version)
        if reason:
            log.info("device %s: %s %s@%s: %s", device_id, event, model_id, version, reason)

    def recovered(self) -> list[dict[str, Any]]:
        """Every damaged state file this run found, what it was and what was done about it."""
        return [
            *self.trust.recovered,
            *self.gates.recovered,
            *self.store.recovered,
            *self.inventory.recovered,
            *self.outbox.recovered,
        ]

    def status(self) -> dict[str, Any]:
        """What ``ota-gateway status`` and the dashboard show."""
        reading = self.trust.clock(self.clock())
        index = self.mirror.index
        deployments = []
        for d in index.deployments if index else ():
            progress = self.mirror.fetcher.progress.get(d.sha256)
            deployments.append(
                {
                    "model_id": d.model_id,
                    "version": d.version,
                    "sha256": d.sha256,
                    "length": d.length,
                    "mirrored": self.store.is_verified(d.sha256),
                    "progress_bytes": progress.done if progress else None,
                    "target_cohort": d.target_cohort,
                    "rollout_percentage": d.rollout_percentage,
                }
            )
        return {
            "gateway": {
                "version": __version__,
                "site": self.settings.site,
                "uptime_s": round(self.clock() - self.started_at),
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
                "scrub": self.store.scrub.to_json(),
                "quarantined": list(self.store.quarantined),
            },
            "health": probe(self.data),
            "mqtt": {
                "listen": {name: f"{h}:{p}" for name, (h, p) in self.broker.addresses.items()}
                if self.broker
                else {},
                **(self.broker.stats() if self.broker else {}),
            },
            "uplink": {
                "sinks": {s.name: {"up": self.forwarder.link_up.get(s.name)} for s in self.sinks},
                "outbox": self.outbox.stats(),
            },
            "counters": self.stats.snapshot(),
            "last_errors": dict(self.stats.last_error),
        }


async def run_until_signalled(gateway: Gateway, on_started: Callable[[Gateway], None] | None = None) -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    try:
        if on_started is not None:
            on_started(gateway)
        await stop.wait()
    finally:
        log.info("stopping")
        await gateway.stop()
