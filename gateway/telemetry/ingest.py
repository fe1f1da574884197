"""Metrics and events in (MQTT hook or HTTP POST), validated, journaled, aggregated.

A metrics message is read by the core (:func:`gateway.core.metrics.parse_metrics`: the one
message type and wire form the device agent and the replay trace write too), the common one to the
same sample in one typed step by :mod:`gateway.telemetry.fast_metrics`. Each valid one is first
made durable in the outbox as a ``sample`` record (:meth:`gateway.core.metrics.Sample.record`,
so what was acknowledged to a device survives a crash and reaches the cloud), then added to the
current window and to the inventory (current version, last seen). An invalid one is counted and
dropped with a log line naming the device and the field. Closed windows go to the listeners (the
canary gates) and to the outbox as ``aggregate`` records. The samples' drift sketches go to the
drift watch (:mod:`gateway.telemetry.drift`), whose windows close in the same round.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from gateway.core import jsondoc
from gateway.core.aggregate import Aggregator
from gateway.core.device import DeviceRecord
from gateway.core.errors import FormatError
from gateway.core.events import DeviceEvent, parse_event
from gateway.core.manifest import valid_id
from gateway.core.metrics import MAX_PAYLOAD_BYTES, Sample, parse_metrics
from gateway.core.settings import TelemetrySettings
from gateway.core.window import WindowStats
from gateway.inventory.store import Inventory
from gateway.runtime import jsonfast
from gateway.runtime.stats import Stats
from gateway.telemetry import fast_metrics
from gateway.telemetry.drift import DriftWatch
from gateway.uplink.outbox import Outbox

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 8 << 10
LAST_SEEN_RESOLUTION_S = 5.0


EventListener = Callable[[DeviceEvent], None]
"""A valid device event, over HTTP or MQTT."""
WindowListener = Callable[[list[WindowStats], float], None]
"""(windows, now): metric windows just closed (the canary gates take them)."""


def _read(device_id: str, payload: bytes | Mapping[str, Any], now: float, model_id: str | None) -> Sample:
    """The common message in one typed step; any other decoded for the core, which reads it or
    refuses it in its words (:class:`FormatError`)."""
    if isinstance(payload, bytes | bytearray) and len(payload) <= MAX_PAYLOAD_BYTES:
        sample = fast_metrics.read_sample(device_id, bytes(payload), now, model_id)
        if sample is not None:
            return sample
        decoded = jsonfast.decode_object(payload)  # None: the core reads the bytes and answers
        if decoded is not None:
            return parse_metrics(device_id, decoded, now, model_id=model_id)
    return parse_metrics(device_id, payload, now, model_id=model_id)


class Telemetry:
    """Its events, declared and given at construction: ``on_event`` for each valid device event
    (the listeners in order), ``on_windows`` for each batch of closed windows."""

    def __init__(
        self,
        settings: TelemetrySettings,
        inventory: Inventory,
        outbox: Outbox,
        stats: Stats,
        *,
        on_event: EventListener | Sequence[EventListener],
        on_windows: Sequence[WindowListener] = (),
        journal: bool = True,
        drift: DriftWatch | None = None,
    ) -> None:
        self.aggregator = Aggregator(settings.window_s, settings.cohort_attribute)
        self.inventory = inventory
        self.outbox = outbox
        self.stats = stats
        self.event_listeners: tuple[EventListener, ...] = (
            (on_event,) if callable(on_event) else tuple(on_event)
        )
        self.journal = journal
        self.recent: deque[WindowStats] = deque(maxlen=5000)
        self.listeners = tuple(on_windows)
        self.drift = drift

    async def metrics(self, device_id: str, payload: bytes | Mapping[str, Any], now: float) -> None:
        """Raises :class:`FormatError` (counted, logged) for an invalid message; returns once the
        sample is durable (when samples are journaled)."""
        pending = self.take_metrics(device_id, payload, now)
        if pending is not None:
            await asyncio.shield(pending)  # shared by the loop turn's samples: never cancel it

    def take_metrics(
        self, device_id: str, payload: bytes | Mapping[str, Any], now: float
    ) -> asyncio.Future[int] | None:
        """Validate, journal (the future resolves when durable), aggregate, update the inventory."""
        rec = self.inventory.get(device_id)
        try:
            sample = _read(device_id, payload, now, rec.model_id if rec else None)
        except FormatError as exc:
            self.stats.error("telemetry.invalid", str(exc))
            log.warning("dropped %s", exc)
            self._count_invalid(device_id, payload, rec, now)
            raise
        pending = self._journal(sample, now) if self.journal else None
        self.stats.inc("telemetry.samples")
        unchanged = (
            rec is not None
            and rec.model_version == sample.model_version
            and (not sample.model_id or rec.model_id == sample.model_id)
            and "metrics" in rec.sources
            and now - rec.last_seen < LAST_SEEN_RESOLUTION_S
        )
        if not sample.shadow and not unchanged:  # last seen to the nearest few seconds is plenty
            update = {"model_version": sample.model_version}
            if sample.model_id:
                update["model_id"] = sample.model_id
            self.inventory.upsert(device_id, update, source="metrics", now=now)
        attrs = rec.attrs if rec else {}
        self.aggregator.add(sample, attrs)
        if self.drift is not None:
            self.drift.take(sample, attrs, now)
        return pending

    def _count_invalid(
        self, device_id: str, payload: bytes | Mapping[str, Any], rec: DeviceRecord | None, now: float
    ) -> None:
        """Put a refused message on the version the device runs (the one it names, if readable, or
        the one it last reported), so the gates see a candidate whose metrics turn invalid."""
        doc: Any = payload
        if isinstance(payload, bytes | bytearray) and len(payload) <= MAX_PAYLOAD_BYTES:
            try:
                doc = jsondoc.loads(payload)
            except FormatError:
                doc = None
        named = doc.get("model_version") if isinstance(doc, Mapping) else None
        version = (
            named if isinstance(named, str) and valid_id(named) else (rec.model_version if rec else None)
        )
        model_id = rec.model_id if rec else None
        if version and model_id:
            self.aggregator.add_invalid(device_id, model_id, version, rec.attrs if rec else {}, now)

    def _journal(self, sample: Sample, now: float) -> asyncio.Future[int]:
        return self.outbox.append_grouped("sample", sample.record(), now)

    def mqtt_message(
        self, device_id: str, topic: str, payload: bytes, now: float
    ) -> asyncio.Future[int] | None:
        """The broker's ingest hook for ``devices/{id}/metrics`` and ``devices/{id}/events``.
        A returned future: the broker acknowledges the message once it resolves (durable)."""
        kind = topic.rsplit("/", 1)[-1]
        if kind == "metrics":
            try:
                return self.take_metrics(device_id, payload, now)
            except FormatError:
                return None  # counted and logged; acknowledged so the device does not resend it
        if kind != "events":
            return None  # other topics under the device's namespace are not ingested
        try:
            if len(payload) > MAX_EVENT_BYTES:
                raise FormatError(f"event of {len(payload)} bytes")
            name, model_id, version, reason = parse_event(jsondoc.loads(payload))
        except FormatError as exc:
            self.stats.error("telemetry.invalid_events", f"{device_id}: {exc}")
            log.warning("dropped an event from %s: %s", device_id, exc)
            return None
        self.on_event(DeviceEvent(device_id, name, model_id, version, reason))
        return None

    def on_event(self, event: DeviceEvent) -> None:
        """A valid device event (over MQTT here, or from the HTTP endpoint), to every listener."""
        for listener in self.event_listeners:
            listener(event)

    async def close_windows(self, now: float) -> list[WindowStats]:
        if self.drift is not None:
            await self.drift.close_due(now)
        windows = self.aggregator.close_due(now)
        if not windows:
            return []
        self.recent.extend(windows)
        for listener in self.listeners:
            try:
                listener(windows, now)
            except Exception:
                log.exception("window listener failed")
        await self.outbox.append("aggregate", {"windows": [w.to_json() for w in windows]}, now)
        self.stats.inc("telemetry.windows", len(windows))
        return windows
