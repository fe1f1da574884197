"""The uplink as the settings name it: its sinks, the disk outbox in front of them, the forwarder.

Only assembly: each part is in its own module (:mod:`~gateway.uplink.sinks`,
:mod:`~gateway.uplink.outbox`, :mod:`~gateway.uplink.forwarder`); the service starts and stops them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.core.errors import ConfigError
from gateway.core.settings import Settings
from gateway.runtime.stats import Stats
from gateway.uplink.forwarder import Forwarder
from gateway.uplink.outbox import EXPORT_SINK, Outbox
from gateway.uplink.sinks import HttpSink, MqttBridge, Sink


def uplink_from(
    settings: Settings, data: Path, stats: Stats, clock: Callable[[], float]
) -> tuple[list[Sink], Outbox, Forwarder]:
    """The sinks the settings name, the disk outbox in front of them, and the forwarder."""
    up = settings.uplink
    sinks: list[Sink] = []
    if up.ingest_url:
        sinks.append(
            HttpSink(up.ingest_url, up.ingest_token, settings.site, ca_bundle=settings.mirror.ca_bundle)
        )
    if up.mqtt_url:
        try:
            ca = settings.mirror.ca_bundle
            sinks.append(MqttBridge(up.mqtt_url, settings.site, ca_bundle=ca, window=up.mqtt_window))
        except ValueError as exc:
            raise ConfigError(
                "configuration", "uplink.mqtt_url", "mqtt://user:pass@host:port or mqtts://..."
            ) from exc
    outbox = Outbox(
        data / "outbox.sqlite",
        max_bytes=up.outbox_max_bytes,
        max_age_s=up.outbox_max_age_s,
        sinks=[s.name for s in sinks] or [EXPORT_SINK],  # air-gapped: records wait for `uplink export`
        open_now=False,  # opened in start(), under the data folder's lock
    )
    forwarder = Forwarder(
        outbox,
        sinks,
        stats,
        retry_initial_s=settings.mirror.retry_initial_s,
        retry_max_s=settings.mirror.retry_max_s,
        idle_s=up.report_interval_s,
        clock=clock,
    )
    return sinks, outbox, forwarder
