"""The durable outbox: every record for the cloud, on disk, numbered, until each sink has it.

Storage is SQLite (Python's ``sqlite3``) in WAL mode with ``synchronous=FULL``: a record is on the
platter when :meth:`Outbox.append` returns, a torn write after a power cut is rolled back by SQLite
itself, and bodies are JSON text (never pickle). We chose it over hand-written segment files
because its atomic commit and recovery are what we would otherwise write ourselves, and over
``diskcache`` because we need ordered range reads, per-kind deletion and sequence numbers that are
never reused (``AUTOINCREMENT``), which are one SQL statement each.

Its parts, one job each, sharing the open file:

* :class:`~gateway.uplink.outbox_file.OutboxFile`: the file, checked at open; a damaged one (not
  SQLite, a page of garbage, truncated, tables of another shape) is moved aside with its
  ``-wal``/``-shm`` as ``outbox.sqlite.corrupt-<time>`` and a fresh outbox is opened: how many
  unsent records were in it is unknown, and ``/status`` says so;
* :class:`~gateway.uplink.append.Appender`: the append path (group commit by one writer thread; a
  relayed batch all or none; a record with a key once);
* :class:`~gateway.uplink.bounds.Bounds`: ``max_bytes`` and ``max_age_s``, what is shed past them
  (samples first, then aggregates, then health; events, inventory changes and gate decisions last),
  every drop counted, and the relay's quotas (a relayed batch is refused, never shed for);
* :class:`~gateway.uplink.delivery.Delivery`: each sink's cursor, what it has not acknowledged,
  and deleting what every sink has.

This class builds them, opens and closes them together, and keeps the outbox's one surface: a thin
facade, kept because its callers are many (the ingest, drift, the site loop, the samples desk, the
relay, the forwarder, the export, status and /metrics, and the tests of its guarantees); each method
hands over to the part named in it. What it reads across the parts (:meth:`depth`, :meth:`stats`)
is its own.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from gateway.uplink.append import Appender
from gateway.uplink.bounds import Bounds
from gateway.uplink.delivery import EXPORT_SINK as EXPORT_SINK
from gateway.uplink.delivery import Delivery
from gateway.uplink.outbox_file import Depth, OutboxFile, Record, read_depth, seam


class Outbox:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        max_age_s: float,
        sinks: Sequence[str] = ("default",),
        open_now: bool = True,
    ) -> None:
        self.path = path
        self.file = OutboxFile(path)
        self.bounds = Bounds(self.file, max_bytes=max_bytes, max_age_s=max_age_s)
        self.appender = Appender(self.file, self.bounds)
        self.delivery = Delivery(self.file, sinks)
        if open_now:
            self.open()

    def open(self) -> None:
        """Open (or create) the database and start the writer; blocking, idempotent."""
        if self.file.is_open:
            return
        self.file.open()
        self.delivery.register()
        self.appender.start()

    def close(self) -> None:
        self.appender.close()
        self.file.close()

    @property
    def db(self) -> sqlite3.Connection:
        return self.file.db

    @property
    def recovered(self) -> list[dict[str, Any]]:
        """A damaged database found at open (for /status)."""
        return self.file.recovered

    # -- appending: the appender ----------------------------------------------------------------------

    def append_nowait(self, kind: str, body: dict[str, Any], now: float) -> asyncio.Future[int]:
        """Queue a record; the future resolves with its sequence number once it is committed."""
        return self.appender.append_nowait(kind, body, now)

    def append_grouped(self, kind: str, body: dict[str, Any], now: float) -> asyncio.Future[int]:
        """Queue a record; the future, shared by this loop turn's grouped appends, resolves once
        they are committed (:meth:`Appender.append_grouped`: await it through ``asyncio.shield``)."""
        return self.appender.append_grouped(kind, body, now)

    async def append(self, kind: str, body: dict[str, Any], now: float) -> int:
        """Durable when it returns: the record's sequence number, after its commit."""
        return await self.appender.append_nowait(kind, body, now)

    def append_bounded(self, kind: str, texts: list[str], now: float, *, key: str, quota_bytes: int) -> int:
        """Blocking: all ``texts`` in one commit or none (:meth:`Appender.append_bounded`)."""
        return self.appender.append_bounded(kind, texts, now, key=key, quota_bytes=quota_bytes)

    def append_once(self, kind: str, body: dict[str, Any], now: float, *, key: str) -> bool:
        """Blocking: the record with ``key`` in one commit; False (nothing written) when ``key`` is known."""
        return self.appender.append_once(kind, body, now, key=key)

    # -- delivering: each sink's cursor ---------------------------------------------------------------

    def acked(self, sink: str) -> int:
        return self.delivery.acked(sink)

    def peek(
        self, sink: str, max_records: int = 500, max_bytes: int = 1 << 20, *, after: int | None = None
    ) -> list[Record]:
        """The oldest records this sink has not acknowledged (:meth:`Delivery.peek`)."""
        return self.delivery.peek(sink, max_records, max_bytes, after=after)

    def ack(self, sink: str, up_to_seq: int) -> None:
        """``sink`` has every record up to ``up_to_seq``; records every sink has are deleted."""
        self.delivery.ack(sink, up_to_seq)

    # -- the bounds and their drops -------------------------------------------------------------------

    def expire(self, now: float) -> int:
        """Drop records older than ``max_age_s`` (counted); returns how many."""
        return self.bounds.expire(now)

    async def expire_forever(self, clock: Callable[[], float]) -> None:
        """The age bound kept as time passes, delivered or not: at start, then every tenth of
        ``max_age_s`` (1 s to 10 min), in a worker thread."""
        every = min(max(self.bounds.max_age_s / 10, 1.0), 600.0)
        while True:
            await asyncio.to_thread(self.expire, clock())
            await asyncio.sleep(every)

    def count_drop(self, kind: str, reason: str, n: int = 1) -> None:
        """Count records lost outside the outbox's own bounds (e.g. refused by the cloud)."""
        self.bounds.count_drop(kind, reason, n)

    def take_drops(self) -> dict[str, dict[str, int]]:
        """Drop counts since the last call (they then go upstream as a ``drops`` record)."""
        return self.bounds.take_drops()

    # -- what it holds --------------------------------------------------------------------------------

    @seam
    def depth(self) -> Depth:
        """Records waiting, their bytes, the oldest one's time, and this run's drops (for /metrics)."""
        with self.file.lock:
            return read_depth(self.file, dict(self.bounds.dropped))

    def stats(self) -> dict[str, Any]:
        """For the status page: never raises (a damaged outbox is shown as such)."""
        try:
            return self._stats()
        except sqlite3.Error as exc:
            return {"error": f"outbox {self.path} failed: {exc} (set aside at the next start)"}

    def _stats(self) -> dict[str, Any]:
        with self.file.lock:
            pending = self.file.pending_locked()
            drops = self.file.db.execute("SELECT kind, reason, count FROM drops").fetchall()
        return {
            "pending": {k: {"records": n, "bytes": b} for k, (n, b) in sorted(pending.items())},
            "pending_bytes": self.file.bytes,
            "drops_unreported": {f"{k}:{r}": c for k, r, c in drops},
            "acked": self.delivery.cursors(),
        }
