"""The device event message (HTTP body or MQTT payload), validated: what happened to an update.

``{"event": one of EVENTS, "model_id": ..., "version": ..., "reason": ...}``; ``model_id`` and
``version`` are ids, ``reason`` at most 1024 characters. A valid one travels as one
:class:`DeviceEvent` value to the listeners (the telemetry ingest's ``on_event``). Pure: what an
event does (inventory, gates) is for the callers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import FormatError
from gateway.core.manifest import valid_id

EVENTS = ("downloaded", "verified", "activated", "healthy", "rolled_back", "failed")


@dataclass(frozen=True)
class DeviceEvent:
    """A valid device event (over HTTP, MQTT or hawkBit DDI): what happened to an update on one
    device. ``model_id``/``version`` None: the device did not say (its last known one)."""

    device_id: str
    event: str  # one of EVENTS
    model_id: str | None = None
    version: str | None = None
    reason: str | None = None


def parse_event(doc: Any) -> tuple[str, str | None, str | None, str | None]:
    """A device event (HTTP body or MQTT payload) -> (event, model_id, version, reason)."""
    if not isinstance(doc, Mapping):
        raise FormatError("body: expected a JSON object")
    name = doc.get("event")
    if name not in EVENTS:
        raise FormatError("event: one of " + ", ".join(EVENTS))
    model_id, version, reason = doc.get("model_id"), doc.get("version"), doc.get("reason")
    for key, value in (("model_id", model_id), ("version", version)):
        if value is not None and not (isinstance(value, str) and valid_id(value)):
            raise FormatError(f"{key}: letters, digits, '.', '_' or '-'")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 1024):
        raise FormatError("reason: a string of at most 1024 characters")
    return name, model_id, version, reason
