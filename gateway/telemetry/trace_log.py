"""The site's own metrics kept as a replay trace, durably and bounded, so that
``ota-gateway gate trace`` can write last week's data for ``gate replay``.

A listener of the telemetry (given at construction, like the dashboard's history): for each closed
window, one line per device, that device's window turned back into one metrics message
(:meth:`gateway.core.window.DeviceWindow.as_message`) at the window's middle; and one line per device
event, at the time it came. Lines wait in memory (at most ``MAX_PENDING``; past it the oldest are
dropped and counted) and are written in batches off the loop (``asyncio.to_thread``), at most one
batch every ``FLUSH_MIN_S``.

On disk, under ``<data>/traces/``: one segment per hour (by the record's time) and per run of the
gateway, ``YYYYMMDDTHH-<run>.jsonl.gz``, to which each batch appends one gzip member and fsyncs.
Recovery: a crash mid-write cuts the last member of its run's segment short; the reader keeps every
complete member before it and drops the cut one (a new run writes new segments, never after a cut
member). After each batch the oldest segments are deleted while the folder holds more than
``gates.trace_max_bytes`` or a segment's hour ended more than ``gates.trace_keep_s`` ago. A write
error is logged once (until writing works again), counted (``trace.write_errors``, the records in
``trace.lost``), and never stops the gateway.

Each line: ``{"t": POSIX seconds, "device", "model_id", "version", "window_s", "metrics": {...}}`` or
``{"t", "device", "model_id", "version", "event": {"event", "model_id", "version", "reason"}}``.
Shadow windows and refused messages are not kept (the replay runs no shadow stage and takes only
valid messages). Turning these lines into a trace is :mod:`gateway.rollout.trace`'s job.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import os
import re
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.core.events import DeviceEvent
from gateway.core.window import WindowStats
from gateway.runtime.stats import Stats

log = logging.getLogger(__name__)

SEGMENT_S = 3600
MAX_PENDING = 200_000  # lines waiting for the next batch
FLUSH_MIN_S = 2.0  # at most one batch this often
FLUSH_MAX_S = 60.0  # and one at least this often (the age bound is kept even on a quiet site)
MAX_DEVICES = 100_000  # devices whose last version is remembered (for an event that names none)
_NAME = re.compile(r"^(\d{8}T\d{2})-([0-9a-f]+)\.jsonl\.gz$")


def segment_hour(name: str) -> int | None:
    """The hour (POSIX seconds // 3600) a segment's name says, or None for another file."""
    m = _NAME.match(name)
    if m is None:
        return None
    return int(datetime.strptime(m.group(1), "%Y%m%dT%H").replace(tzinfo=UTC).timestamp()) // SEGMENT_S


class TraceLog:
    """The listener (:meth:`on_windows`, :meth:`on_event`) and its writer (:meth:`run`, :meth:`close`)."""

    def __init__(
        self,
        folder: Path,
        *,
        max_bytes: int,
        keep_s: float,
        stats: Stats,
        clock: Callable[[], float],
    ) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.keep_s = keep_s
        self.stats = stats
        self.clock = clock
        self.enabled = max_bytes > 0
        self._run = f"{int(clock() * 1000):x}"  # this run's segments: never appended after a cut member
        self._pending: deque[dict[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._versions: dict[str, str] = {}
        self._failing = False

    # -- the listeners (on the loop: no I/O) ---------------------------------------------------------

    def on_windows(self, windows: Sequence[WindowStats], _now: float = 0.0) -> None:
        if not self.enabled:
            return
        for w in windows:
            if w.key.shadow:
                continue
            t, model, version = (w.start + w.end) / 2, w.key.model_id, w.key.model_version
            for device, dw in w.device_windows.items():
                self._put(
                    {
                        "t": t,
                        "device": device,
                        "model_id": model,
                        "version": version,
                        "window_s": w.end - w.start,
                        "metrics": dw.as_message(model, version),
                    }
                )
                if device in self._versions or len(self._versions) < MAX_DEVICES:
                    self._versions[device] = version
        self._wake.set()

    def on_event(self, e: DeviceEvent) -> None:
        """A valid device event; one that names no version is put on the device's last one."""
        if not self.enabled:
            return
        body = {"event": e.event, "model_id": e.model_id, "version": e.version, "reason": e.reason}
        self._put(
            {
                "t": self.clock(),
                "device": e.device_id,
                "model_id": e.model_id,
                "version": e.version or self._versions.get(e.device_id),
                "event": {k: v for k, v in body.items() if v is not None},
            }
        )
        self._wake.set()

    def _put(self, record: dict[str, Any]) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.stats.inc("trace.lost")
        self._pending.append(record)

    # -- the writer ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Forever: a batch when something came (at most every ``FLUSH_MIN_S``), or every ``FLUSH_MAX_S``."""
        if not self.enabled:
            return
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), FLUSH_MAX_S)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()
            await asyncio.sleep(FLUSH_MIN_S)  # a pace, not a synchronisation: lines gather meanwhile

    async def close(self) -> None:
        if self.enabled:
            await self.flush()

    async def flush(self) -> None:
        batch = list(self._pending)
        self._pending.clear()
        try:
            await asyncio.to_thread(self._write, batch, self.clock())
        except OSError as exc:
            self.stats.inc("trace.write_errors")
            self.stats.inc("trace.lost", len(batch))
            if not self._failing:
                self._failing = True
                log.warning(
                    "trace: cannot write under %s (%s): the site's trace loses records until it can; "
                    "the gateway goes on",
                    self.folder,
                    exc,
                )
            return
        if self._failing:
            self._failing = False
            log.info("trace: writing under %s again", self.folder)
        self.stats.inc("trace.records", len(batch))

    def _write(self, batch: list[dict[str, Any]], now: float) -> None:
        """Blocking: one gzip member per hour touched, appended and fsynced; then the bounds."""
        if batch:
            self.folder.mkdir(parents=True, exist_ok=True)
            hours: dict[int, list[bytes]] = {}
            for rec in batch:
                line = json.dumps(rec, separators=(",", ":")).encode() + b"\n"
                hours.setdefault(int(rec["t"] // SEGMENT_S), []).append(line)
            for hour, lines in sorted(hours.items()):
                stamp = datetime.fromtimestamp(hour * SEGMENT_S, UTC).strftime("%Y%m%dT%H")
                with (self.folder / f"{stamp}-{self._run}.jsonl.gz").open("ab") as f:
                    f.write(gzip.compress(b"".join(lines), compresslevel=6, mtime=0))
                    f.flush()
                    os.fsync(f.fileno())
        self._prune(now)

    def _prune(self, now: float) -> None:
        if not self.folder.is_dir():
            return
        segments = sorted(
            (hour, e.name, e.stat().st_size)
            for e in os.scandir(self.folder)
            if (hour := segment_hour(e.name)) is not None
        )
        total = sum(size for _, _, size in segments)
        for hour, name, size in segments:  # the oldest first
            if total <= self.max_bytes and (hour + 1) * SEGMENT_S > now - self.keep_s:
                break
            (self.folder / name).unlink(missing_ok=True)
            total -= size


def _members(data: bytes) -> Iterator[bytes]:
    """The complete gzip members of a segment; a member cut short (a crash mid-write) ends it."""
    while data:
        d = zlib.decompressobj(wbits=31)
        try:
            out = d.decompress(data)
        except zlib.error:
            return
        if not d.eof:
            return
        yield out
        data = d.unused_data


def read_hours(folder: Path, since: float) -> Iterator[list[dict[str, Any]]]:
    """Blocking: the kept records from ``since`` on, one hour at a time (in time order within it),
    oldest hour first. Unreadable lines and cut members are skipped."""
    if not folder.is_dir():
        return
    by_hour: dict[int, list[str]] = {}
    for e in os.scandir(folder):
        hour = segment_hour(e.name)
        if hour is not None and (hour + 1) * SEGMENT_S > since:
            by_hour.setdefault(hour, []).append(e.name)
    for hour in sorted(by_hour):
        records: list[dict[str, Any]] = []
        for name in sorted(by_hour[hour]):
            try:
                data = (folder / name).read_bytes()
            except OSError:
                continue  # dropped meanwhile (the gateway keeps its bounds while we read)
            for member in _members(data):
                for line in member.splitlines():
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    t = rec.get("t") if isinstance(rec, dict) else None
                    if isinstance(t, int | float) and not isinstance(t, bool) and t >= since:
                        records.append(rec)
        records.sort(key=lambda r: r["t"])
        yield records
