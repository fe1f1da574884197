"""The inventory: every device the site knows, merged from polls, the site file, mDNS, metrics, events.

Attributes merge per key, newest write wins, with one exception: a key the installer set in the site
inventory file is the installer's word and is not overridden by what a device or mDNS claims (a
device cannot talk itself into another cohort). The store is bounded (``devices.max_devices``; the
longest-unseen device goes first; an entry that is not a device, a child gateway, only ever takes
the place of another such entry, never a device's), kept in memory, and persisted to ``inventory.json`` atomically
from a worker thread when it changed (at most once per ``flush_interval_s``). Changes and events are
also queued, bounded, for the next site report.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gateway.core.device import DeviceRecord
from gateway.core.errors import ConfigError, DamagedStateError, StorageError
from gateway.core.manifest import valid_id
from gateway.runtime import atomic

log = logging.getLogger(__name__)

MAX_ATTRS = 32
MAX_ATTR_CHARS = 128
MAX_CHANGES = 10_000


def clean_attrs(attrs: Mapping[str, Any]) -> dict[str, str]:
    """Bounded string attributes; anything else is dropped (the caller validated what it must)."""
    out: dict[str, str] = {}
    for k, v in attrs.items():
        if len(out) >= MAX_ATTRS:
            break
        if isinstance(k, str) and isinstance(v, str | int | float) and not isinstance(v, bool):
            k, v = k[:MAX_ATTR_CHARS], str(v)[:MAX_ATTR_CHARS]
            if k:
                out[k] = v
    return out


def load_inventory_file(path: Path) -> dict[str, dict[str, str]]:
    """``{"devices": {"<id>": {"hw": "rev2", "region": "eu-west", ...}}}``; ConfigError names the entry."""
    source = str(path)
    try:
        doc = json.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(source, "(file)", f"a readable JSON inventory ({exc.strerror})") from exc
    except ValueError as exc:
        raise ConfigError(source, "(syntax)", f"valid JSON ({exc})") from exc
    devices = doc.get("devices") if isinstance(doc, dict) else None
    if not isinstance(devices, dict):
        raise ConfigError(source, "devices", 'an object {"<device id>": {attributes}}')
    out: dict[str, dict[str, str]] = {}
    for device_id, attrs in devices.items():
        if not valid_id(device_id):
            raise ConfigError(
                source, f"devices.{device_id}", "a device id of letters, digits, '.', '_' or '-'"
            )
        if not isinstance(attrs, dict) or not all(isinstance(v, str) for v in attrs.values()):
            raise ConfigError(source, f"devices.{device_id}", "an object of string attributes")
        out[device_id] = clean_attrs(attrs)
    return out


def _seen_at(rec: DeviceRecord, now: float) -> DeviceRecord:
    """``dataclasses.replace(rec, last_seen=now)`` at a fifth of its cost (it runs for every device
    that polled, when its time is folded in): a copy of the frozen record's fields with one
    changed, made without calling ``__init__``."""
    new = object.__new__(DeviceRecord)
    fields = new.__dict__
    fields.update(rec.__dict__)
    fields["last_seen"] = now
    return new


class _LastPoll:
    """A device's last poll: the attributes it sent, the record they gave, and when a repeated poll
    last moved ``last_seen`` without it being written into the record yet (:meth:`Inventory._fold`):
    a repeated poll writes one float here, in the slot it has just read."""

    __slots__ = ("attrs", "record", "seen")

    def __init__(self, attrs: Mapping[str, str], record: DeviceRecord) -> None:
        self.attrs = attrs
        self.record = record
        self.seen: float | None = None


def records_json(records: Iterable[DeviceRecord]) -> dict[str, Any]:
    """The persisted (and operator API) form of the records, built by hand: ``dataclasses.asdict``
    deep-copies every field and costs ten times as much."""
    return {
        "devices": [
            {
                "device_id": r.device_id,
                "attrs": dict(r.attrs),
                "sources": sorted(r.sources),
                "first_seen": r.first_seen,
                "last_seen": r.last_seen,
                "model_id": r.model_id,
                "model_version": r.model_version,
                "last_event": r.last_event,
                "last_event_at": r.last_event_at,
                "gone": r.gone,
                "blocked_by_firmware": r.blocked_by_firmware,
            }
            for r in records
        ]
    }


def is_device(rec: DeviceRecord) -> bool:
    """A device, not a child gateway (``kind = gateway``) listed beside the devices."""
    return rec.attrs.get("kind") != "gateway"


class Inventory:
    """Implements :class:`gateway.core.device.DeviceSink` and the rest of the device facts."""

    def __init__(
        self, path: Path | None, *, max_devices: int = 100_000, flush_interval_s: float = 30.0
    ) -> None:
        self.path = path
        self.max_devices = max_devices
        self.flush_interval_s = flush_interval_s
        self.devices: dict[str, DeviceRecord] = {}
        self.pinned: dict[str, dict[str, str]] = {}  # from the site inventory file
        self.changes: deque[dict[str, Any]] = deque(maxlen=MAX_CHANGES)
        self.changes_dropped = 0
        self.version = 0  # bumps on every change (long polls and waves watch it)
        self._dirty = False
        self._last_flush = 0.0
        self.recovered: list[dict[str, Any]] = []  # a damaged inventory.json found at load (for /status)
        # Each device's last poll: a poll that repeats its attributes only moves last_seen (and
        # keeps the record's attrs object, which the poll memo keys on). The time is stored in the
        # slot, not copied into the record; it is folded in (:meth:`_fold`) before a record is read
        # for its time (get, records) or changed.
        self._last_poll: dict[str, _LastPoll] = {}

    # -- loading ----------------------------------------------------------------------------------

    def load(self) -> None:
        """Blocking: read what was persisted (call before the loop serves, or in a thread)."""
        if self.path is None:
            return
        try:
            doc = atomic.read_json(self.path, {}) or {}
            items = doc.get("devices", []) if isinstance(doc, dict) else None
            if not isinstance(items, list):
                raise DamagedStateError(str(self.path), 'wrong schema (expected {"devices": [...]})')
        except DamagedStateError as exc:
            # A cache: devices re-register as they poll; the site inventory file is applied after this.
            moved = atomic.move_aside(self.path)
            action = "started empty: devices re-register as they poll"
            self.recovered.append(atomic.recovered(self.path, exc.problem, action, moved))
            self._dirty = True
            return
        for item in items:
            try:
                rec = DeviceRecord(
                    device_id=item["device_id"],
                    attrs=clean_attrs(item.get("attrs", {})),
                    sources=frozenset(item.get("sources", [])),
                    first_seen=float(item.get("first_seen", 0)),
                    last_seen=float(item.get("last_seen", 0)),
                    model_id=item.get("model_id"),
                    model_version=item.get("model_version"),
                    last_event=item.get("last_event"),
                    last_event_at=item.get("last_event_at"),
                    gone=bool(item.get("gone", False)),
                    blocked_by_firmware=item.get("blocked_by_firmware"),
                )
            except (AttributeError, KeyError, TypeError, ValueError):
                continue  # one unreadable record: that device re-registers when it next polls
            texts = (rec.model_id, rec.model_version, rec.last_event)
            if not (isinstance(rec.device_id, str) and valid_id(rec.device_id)) or not all(
                t is None or isinstance(t, str) for t in texts
            ):
                continue
            self.devices[rec.device_id] = rec

    def apply_file(self, entries: Mapping[str, Mapping[str, str]], now: float) -> None:
        self.pinned = {k: dict(v) for k, v in entries.items()}
        self.records()  # every repeated poll's time folded in before the slots that hold it go
        self._last_poll.clear()  # the pinned keys take part in every merge
        for device_id, attrs in entries.items():
            self._merge(device_id, dict(attrs), "file", now, touch=False)

    # -- DeviceSink ---------------------------------------------------------------------------------

    def upsert(self, device_id: str, attrs: Mapping[str, str], *, source: str, now: float) -> None:
        if source != "poll":
            self._merge(device_id, clean_attrs(attrs), source, now, touch=True)
            return
        self.polled(device_id, dict(attrs), now)

    def polled(self, device_id: str, attrs: Mapping[str, str], now: float) -> DeviceRecord | None:
        """``upsert(source="poll")``, fast when the poll repeats the device's last one (the usual
        case): then the merge would give the same record with ``last_seen`` moved, nothing to report.
        ``attrs`` is kept by reference: the caller never changes it afterwards (the poll handler's
        parsed query strings are shared and read only). Returns ``devices[device_id]`` (None when
        the inventory is full and the device is new), for the poll's answer."""
        last = self._last_poll.get(device_id)
        if last is not None and (last.attrs is attrs or last.attrs == attrs):
            rec = last.record
            if rec is self.devices.get(device_id):
                last.seen = now
                self._dirty = True
                return rec
        self._merge(device_id, clean_attrs(attrs), "poll", now, touch=True)
        if (merged := self.devices.get(device_id)) is not None:
            self._last_poll[device_id] = _LastPoll(attrs, merged)
        return merged

    def gone(self, device_id: str, *, source: str, now: float) -> None:
        rec = self._fold(device_id)
        if rec is None:
            return
        sources = rec.sources - {source}
        live = bool(sources - {"file"})
        self._put(
            dataclasses.replace(rec, sources=sources, gone=not live),
            {"change": "gone", "source": source},
            now,
        )

    # -- facts from the device API ------------------------------------------------------------------

    def event(
        self, device_id: str, event: str, *, model_id: str | None, version: str | None, now: float
    ) -> None:
        rec = self._fold(device_id) or DeviceRecord(device_id=device_id, first_seen=now)
        changes: dict[str, Any] = {"last_event": event, "last_event_at": now, "last_seen": now, "gone": False}
        if event in ("activated", "healthy") and version:
            changes.update(model_version=version, model_id=model_id or rec.model_id)
        if event == "rolled_back":
            changes.update(model_version=None)  # the device reports its version again on its next poll
        new = dataclasses.replace(rec, sources=rec.sources | {"event"}, **changes)
        self._put(new, {"change": "event", "event": event, "model_id": model_id, "version": version}, now)

    def set_blocked(self, device_id: str, blocked_by: str | None, now: float) -> None:
        rec = self.devices.get(device_id)
        if rec is not None and rec.blocked_by_firmware != blocked_by:
            rec = self._fold(device_id) or rec
            self._put(
                dataclasses.replace(rec, blocked_by_firmware=blocked_by),
                {"change": "blocked_by_firmware", "version": blocked_by},
                now,
            )

    def get(self, device_id: str) -> DeviceRecord | None:
        return self._fold(device_id)

    def live(self) -> list[DeviceRecord]:
        """The devices not gone, for decisions (gates, reports): their ``last_seen`` may lag the
        last poll (:meth:`records` has it exact). Reading them leaves every record as it is, so a
        device's next repeated poll finds the same record object (the poll memo's fast check)."""
        return [r for r in self.devices.values() if not r.gone]

    def records(self) -> list[DeviceRecord]:
        """Every record, ``last_seen`` up to date (``devices`` may hold older times)."""
        for device_id, last in self._last_poll.items():  # _fold changes slots, never the keys
            if last.seen is not None:
                self._fold(device_id)
        return list(self.devices.values())

    # -- internals ----------------------------------------------------------------------------------

    def _fold(self, device_id: str) -> DeviceRecord | None:
        """The device's record with the last poll's time written in (stored back)."""
        rec = self.devices.get(device_id)
        last = self._last_poll.get(device_id)
        if last is None or (seen := last.seen) is None:
            return rec
        last.seen = None
        if rec is None or seen <= rec.last_seen:
            return rec
        new = self.devices[device_id] = _seen_at(rec, seen)
        if last.record is rec:
            last.record = new  # the next repeated poll is still fast
        return new

    def _merge(self, device_id: str, attrs: dict[str, str], source: str, now: float, *, touch: bool) -> None:
        rec = self._fold(device_id)
        if rec is None:
            rec = DeviceRecord(device_id=device_id, first_seen=now)
        pinned = self.pinned.get(device_id, {})
        merged = dict(rec.attrs)
        for k, v in attrs.items():
            if source == "file" or k not in pinned:
                merged[k] = v
        model_id = merged.pop("model_id", None) or merged.pop("model", None) or rec.model_id
        model_version = merged.pop("model_version", None) or rec.model_version
        new = dataclasses.replace(
            rec,
            attrs=rec.attrs if merged == rec.attrs else merged,  # the same object when unchanged
            sources=rec.sources | {source},
            last_seen=now if touch else rec.last_seen,
            model_id=model_id,
            model_version=model_version,
            gone=False if source != "file" else rec.gone,
        )
        if new == rec:
            return
        diff: dict[str, str | None] = {k: v for k, v in merged.items() if rec.attrs.get(k) != v}
        if model_version != rec.model_version:
            diff["model_version"] = model_version
        if not diff and rec.device_id in self.devices and rec.sources >= new.sources and not rec.gone:
            self.devices[device_id] = new  # only last_seen moved: no change to report
            self._dirty = True
            return
        self._put(new, {"change": "attrs", "source": source, "attrs": diff}, now)

    def _put(self, rec: DeviceRecord, change: dict[str, Any], now: float) -> None:
        if rec.device_id not in self.devices and len(self.devices) >= self.max_devices:
            # A device may take the place of any entry; a child gateway only of another one.
            candidates = self.records() if is_device(rec) else [r for r in self.records() if not is_device(r)]
            if not candidates:
                log.warning("inventory full (%d devices): %s not recorded", self.max_devices, rec.device_id)
                return
            oldest = min(candidates, key=lambda r: r.last_seen)
            del self.devices[oldest.device_id]
            self._last_poll.pop(oldest.device_id, None)
            log.warning(
                "inventory full (%d devices): forgot %s, unseen the longest",
                self.max_devices,
                oldest.device_id,
            )
        self.devices[rec.device_id] = rec
        if len(self.changes) == self.changes.maxlen:
            self.changes_dropped += 1
        self.changes.append({"device_id": rec.device_id, "at": now, **change})
        self.version += 1
        self._dirty = True

    def drain_changes(self) -> tuple[list[dict[str, Any]], int]:
        """Changes since the last report, and how many were dropped for the bound."""
        out, dropped = list(self.changes), self.changes_dropped
        self.changes.clear()
        self.changes_dropped = 0
        return out, dropped

    def to_json(self) -> dict[str, Any]:
        return records_json(self.records())

    async def flush(self, now: float, *, force: bool = False) -> None:
        if (
            self.path is None
            or not self._dirty
            or (not force and now - self._last_flush < self.flush_interval_s)
        ):
            return
        self._dirty = False
        self._last_flush = now
        # The records are immutable values: the loop only copies the list; the JSON is built in the
        # worker thread (10k devices take ~100 ms to turn into JSON, too long to hold the loop).
        path, records = self.path, self.records()
        try:
            await asyncio.to_thread(lambda: atomic.write_json(path, records_json(records)))
        except StorageError as exc:  # kept in memory: the next flush tries again, not the next change
            self._dirty, self._last_flush = True, 0.0
            log.warning("%s; the inventory is kept in memory and written on the next flush", exc)
