"""``/metrics``: the gateway's figures in the Prometheus text format, read when scraped.

One custom collector reads what the components already keep (the counters in :class:`Stats`, the
mirror's transfers, the store, the gates, the trust state, the broker, the outbox) at scrape time,
through the status view's references; nothing is counted twice and nothing is kept up to date in
between. Each gateway has its own ``CollectorRegistry`` (never the library's global default), so two
gateways in one process (the tests) never mix figures.

The outbox figures need SQLite and the readiness check writes a file: both run in a worker thread
before the exposition is rendered on the loop from memory. Every name starts ``ota_gateway_``; the
Grafana dashboard in ``deploy/grafana-dashboard.json`` uses these names, so renaming one is a change
for the people who run the box.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from gateway import __version__
from gateway.core.gates import Action, Stage
from gateway.ops import prometheus_shadow
from gateway.ops.prometheus_drift import drift_metrics
from gateway.ops.readiness import Readiness
from gateway.ops.status import StatusView
from gateway.samples.prometheus import SamplesCollector
from gateway.uplink.outbox_file import Depth

P = "ota_gateway_"
# Stats counter -> the ``kind`` label of ota_gateway_mirror_failures_total
MIRROR_FAILURES = {
    "mirror.transport_errors": "transport",
    "mirror.rejected_artifacts": "rejected_artifact",
    "mirror.storage_errors": "storage",
    "mirror.index_poll_errors": "index_poll",
    "mirror.rejected_indexes": "rejected_index",
    "mirror.rejected_key_lists": "rejected_key_list",
    "mirror.rejected_deployments": "rejected_deployment",
}
# broker stats -> the ``reason`` label of ota_gateway_mqtt_refusals_total
MQTT_REFUSALS = {
    "refused": "credentials",
    "refused_full": "max_connections",
    "sessions_refused": "max_sessions",
    "publish_refused": "publish_topic",
    "subscribe_refused": "subscribe_topic",
}
MQTT_DROPS = {
    "queue_dropped": "queue_full",
    "pending_dropped": "pending",
    "slow_consumers": "slow_consumer",
    "malformed": "malformed",
    "oversized": "oversized",
    "timeouts": "timeout",
}


@dataclass
class _Slow:
    """The figures gathered off the loop just before a scrape."""

    depth: Depth | None = None
    outbox_error: bool = False
    not_ready: tuple[str, ...] = field(default_factory=tuple)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(P + name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(P + name, doc, value=value)


class GatewayCollector(Collector):
    def __init__(self, view: StatusView, slow: _Slow) -> None:
        self.view = view
        self.slow = slow

    def collect(self) -> Iterable[Metric]:
        yield from self._gateway()
        yield from self._mirror()
        yield from self._store()
        yield from self._devices()
        yield from self._mqtt()
        yield from self._outbox()
        yield from self._gates()
        yield from prometheus_shadow.families(self.view.gates.site.gates)
        yield from self._tasks()
        yield from drift_metrics(self.view.drift)

    def _tasks(self) -> Iterator[Metric]:
        """The supervised tasks (:mod:`gateway.runtime.supervisor`): restarts, and which keep failing."""
        restarts = CounterMetricFamily(P + "task_restarts", "Restarts of a supervised task", labels=["task"])
        failing = GaugeMetricFamily(
            P + "task_failing", "1 while a supervised task keeps failing (not ready)", labels=["task"]
        )
        for t in self.view.tasks():
            restarts.add_metric([t["name"]], t["restarts"])
            failing.add_metric([t["name"]], 1 if t["failing"] else 0)
        yield from (restarts, failing)

    def _gateway(self) -> Iterator[Metric]:
        v = self.view
        info = GaugeMetricFamily(P + "info", "This gateway: version and site", labels=["version", "site"])
        info.add_metric([__version__, v.settings.site], 1)
        yield info
        yield _gauge("uptime_seconds", "Seconds since start-up", v.clock() - v.started_at)
        yield _gauge("ready", "1 when /readyz answers 200", 0 if self.slow.not_ready else 1)
        reading = v.trust.clock(v.clock())
        yield _gauge("clock_trusted", "1 when the system clock is trusted", 1 if reading.trusted else 0)
        index = v.mirror.index
        yield _gauge(
            "index_version", "Version of the accepted signed index (0: none)", index.version if index else 0
        )
        expiry = GaugeMetricFamily(
            P + "index_expiry_seconds", "Seconds until the accepted index expires (negative: expired)"
        )
        if index is not None:
            expiry.add_metric([], index.expires - reading.now)
        yield expiry

    def _mirror(self) -> Iterator[Metric]:
        v, stats = self.view, self.view.stats
        yield _counter("mirror_bytes", "Artifact bytes received from the upstream", stats["mirror.bytes"])
        yield _counter("mirror_index_polls", "Index polls of the upstream", stats["mirror.index_polls"])
        yield _counter(
            "mirror_artifacts_verified", "Artifacts mirrored and verified", stats["mirror.artifacts_verified"]
        )
        failures = CounterMetricFamily(P + "mirror_failures", "Mirror failures by kind", labels=["kind"])
        for key, kind in MIRROR_FAILURES.items():
            failures.add_metric([kind], stats[key])
        yield failures
        labels = ["deployment"]
        done = GaugeMetricFamily(
            P + "mirror_artifact_done_bytes", "Bytes of the artifact held here", labels=labels
        )
        size = GaugeMetricFamily(P + "mirror_artifact_size_bytes", "The artifact's length", labels=labels)
        ratio = GaugeMetricFamily(
            P + "mirror_progress_ratio", "Share mirrored and verified (1: done)", labels=labels
        )
        rate = GaugeMetricFamily(
            P + "mirror_rate_bytes_per_second", "A transfer's smoothed rate", labels=labels
        )
        seen: set[str] = set()
        for d in v.mirror.index.deployments if v.mirror.index else ():
            key = f"{d.model_id}@{d.version}"
            if key in seen:
                continue
            seen.add(key)
            progress = v.mirror.fetcher.progress.get(d.sha256)
            held = d.length if v.store.is_verified(d.sha256) else (progress.done if progress else 0)
            done.add_metric([key], held)
            size.add_metric([key], d.length)
            ratio.add_metric([key], held / d.length if d.length else 1.0)
            rate.add_metric([key], progress.rate_bps if progress else 0.0)
        yield from (done, size, ratio, rate)

    def _store(self) -> Iterator[Metric]:
        v, stats = self.view, self.view.stats
        verified = v.store.verified
        yield _gauge("store_used_bytes", "Bytes of verified blobs", sum(i.size for i in verified.values()))
        yield _gauge("store_quota_bytes", "store.quota_bytes (0: no quota)", v.settings.store.quota_bytes)
        yield _gauge("store_blobs", "Verified blobs held", len(verified))
        yield _counter("store_evictions", "Blobs evicted for the quota (LRU)", stats["store.evictions"])
        yield _counter("store_evicted_bytes", "Bytes evicted for the quota", stats["store.evicted_bytes"])
        yield _gauge(
            "store_quarantined_files",
            "Rotten blobs kept in quarantine/ this run",
            len(v.store.scrubber.quarantined),
        )

    def _devices(self) -> Iterator[Metric]:
        stats = self.view.stats
        polls = CounterMetricFamily(
            P + "polls", "Update polls by answer and reason", labels=["answer", "reason"]
        )
        for labels, n in stats.labelled("devices.poll_answers"):
            polls.add_metric([labels["answer"], labels["reason"]], n)
        yield polls
        yield _counter("download_bytes", "Artifact bytes sent to devices", stats["downloads.bytes"])
        yield _counter(
            "download_fast", "Downloads answered by the short path beside aiohttp", stats["downloads.fast"]
        )
        yield _counter(
            "download_unavailable", "Downloads answered 503 (still mirroring)", stats["downloads.unavailable"]
        )
        yield _gauge("devices_known", "Devices in the inventory", len(self.view.inventory.devices))
        yield _counter("telemetry_samples", "Valid metrics messages taken in", stats["telemetry.samples"])
        yield _counter("telemetry_invalid", "Metrics messages refused as invalid", stats["telemetry.invalid"])

    def _mqtt(self) -> Iterator[Metric]:
        broker = self.view.broker()
        figures = broker.stats() if broker is not None else {}
        yield _gauge("mqtt_connections", "Authenticated MQTT connections now", figures.get("connections", 0))
        yield _gauge("mqtt_sessions", "MQTT sessions now (incl. offline)", figures.get("sessions", 0))
        messages = CounterMetricFamily(P + "mqtt_messages", "MQTT messages", labels=["direction"])
        messages.add_metric(["received"], figures.get("published", 0))
        messages.add_metric(["delivered"], figures.get("delivered", 0))
        yield messages
        yield _counter("mqtt_accepted", "MQTT connections accepted", figures.get("accepted", 0))
        refusals = CounterMetricFamily(P + "mqtt_refusals", "MQTT refusals by reason", labels=["reason"])
        for key, reason in MQTT_REFUSALS.items():
            refusals.add_metric([reason], figures.get(key, 0))
        yield refusals
        drops = CounterMetricFamily(P + "mqtt_drops", "MQTT clients or messages dropped", labels=["reason"])
        for key, reason in MQTT_DROPS.items():
            drops.add_metric([reason], figures.get(key, 0))
        yield drops
        if figures.get("mode") == "external":
            yield from self._external(figures)

    @staticmethod
    def _external(figures: dict[str, Any]) -> Iterator[Metric]:
        """The link to the site broker (``mqtt.mode = "external"``)."""
        yield _gauge("mqtt_external_connected", "1 while connected to the site broker", figures["connected"])
        yield _gauge(
            "mqtt_external_unacknowledged",
            "Messages taken from the site broker, waiting for their outbox commit",
            figures["unacknowledged"],
        )
        yield _counter("mqtt_external_acked", "Messages acknowledged to the site broker", figures["acked"])
        yield _counter(
            "mqtt_external_dropped_on_reconnect",
            "Messages of a lost connection, never acknowledged (the broker sends them again)",
            figures["dropped_on_reconnect"],
        )
        yield _counter(
            "mqtt_external_window_full",
            "Times reading stopped with mqtt.external_receive_max messages waiting for their commit",
            figures["window_full"],
        )

    def _outbox(self) -> Iterator[Metric]:
        depth = self.slow.depth
        yield _gauge("outbox_records", "Records waiting for the cloud", depth.records if depth else 0)
        yield _gauge("outbox_bytes", "Bytes waiting for the cloud", depth.bytes if depth else 0)
        oldest = depth.oldest_at if depth else None
        yield _gauge(
            "outbox_oldest_age_seconds",
            "Age of the oldest record waiting (0: none)",
            max(0.0, self.view.clock() - oldest) if oldest is not None else 0.0,
        )
        yield _gauge(
            "outbox_healthy", "0 when the outbox database failed", 0 if self.slow.outbox_error else 1
        )
        drops = CounterMetricFamily(
            P + "outbox_drops", "Records dropped by kind and reason", labels=["kind", "reason"]
        )
        for (kind, reason), n in sorted((depth.dropped if depth else {}).items()):
            drops.add_metric([kind, reason], n)
        yield drops

    def _gates(self) -> Iterator[Metric]:
        labels = ["deployment"]
        stage = GaugeMetricFamily(P + "gate_stage", "1 for the gate's stage", labels=["deployment", "stage"])
        wave = GaugeMetricFamily(P + "gate_wave", "The gate's current wave (0: first)", labels=labels)
        held = GaugeMetricFamily(
            P + "gate_held", "1 while a person or the cloud holds the gate", labels=labels
        )
        admitted = CounterMetricFamily(
            P + "gate_admissions", "Devices admitted to the candidate", labels=labels
        )
        halts = CounterMetricFamily(P + "gate_halts", "Halts decided by the gate", labels=labels)
        for key, g in sorted(self.view.gates.site.gates.items()):
            for s in Stage:
                stage.add_metric([key, str(s)], 1 if g.stage == s else 0)
            wave.add_metric([key], g.wave)
            held.add_metric([key], 1 if g.held_by else 0)
            admitted.add_metric([key], len(g.admitted))
            halts.add_metric([key], sum(1 for d in g.decisions if d.action == Action.HALT))
        yield from (stage, wave, held, admitted, halts)


class GatewayMetrics:
    """The registry of one gateway and its exposition."""

    def __init__(self, view: StatusView, readiness: Readiness) -> None:
        self.view = view
        self.readiness = readiness
        self._slow = _Slow()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(view, self._slow))
        self.registry.register(SamplesCollector(view.samples))

    def _outbox_depth(self) -> None:
        try:
            self._slow.depth, self._slow.outbox_error = self.view.outbox.depth(), False
        except Exception:  # a damaged outbox: status says why; here it is outbox_healthy 0
            self._slow.depth, self._slow.outbox_error = None, True

    async def exposition(self) -> bytes:
        await asyncio.to_thread(self._outbox_depth)
        self._slow.not_ready = tuple(await self.readiness.reasons())
        return generate_latest(self.registry)
