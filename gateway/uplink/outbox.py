"""The durable outbox: every record for the cloud, on disk, numbered, until each sink has it.

Storage is SQLite (Python's ``sqlite3``) in WAL mode with ``synchronous=FULL``: a record is on the
platter when :meth:`Outbox.append` returns, a torn write after a power cut is rolled back by SQLite
itself, and bodies are JSON text (never pickle). We chose it over hand-written segment files
because its atomic commit and recovery are what we would otherwise write ourselves, and over
``diskcache`` because we need ordered range reads, per-kind deletion and sequence numbers that are
never reused (``AUTOINCREMENT``), which are one SQL statement each.

Appends are group-committed by one writer thread: concurrent appends within a few milliseconds
share one fsync, and each caller's future resolves only after its commit (so an MQTT PUBACK can wait
for it). What a power cut can lose: nothing whose ``append`` completed. A ``kill -9`` loses nothing
either (committed is committed); what was in flight in the process at that instant (accepted from a
device but not yet committed, a few milliseconds' worth) was never acknowledged.

A damaged database (not SQLite, a page of garbage, truncated, tables of another shape) found at
:meth:`Outbox.open` is moved aside with its ``-wal``/``-shm`` as ``outbox.sqlite.corrupt-<time>``
and a fresh outbox is opened: how many unsent records were in it is unknown, and ``/status`` says so.

Bounds: ``max_bytes`` and ``max_age_s``. On overflow records are dropped by kind, in this order:
``sample`` (raw metrics) first, then ``aggregate``, then ``health``; events, inventory changes and
gate decisions last. Every drop is counted by kind and reason, and the counts go upstream as a
``drops`` record when delivery resumes. :meth:`Outbox.append_bounded` (records relayed for a child
gateway) never sheds: it commits a whole batch or refuses it (:class:`OutboxFullError`) when it
would take the outbox past ``max_bytes`` or one sender's records past their quota.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.core.errors import DamagedStateError, OutboxFullError, StorageError
from gateway.uplink.outbox_file import (
    Depth,
    Pending,
    Record,
    connect_checked,
    drain_drops,
    insert_once,
    read_depth,
    register_sinks,
    resolve,
    seam,
    set_aside,
)

log = logging.getLogger(__name__)

DROP_ORDER = ("sample", "aggregate", "health")  # first to go; any other kind is kept longest
GROUP_COMMIT_S = 0.004
MAX_BATCH = 1000
EXPORT_SINK = "export"  # ``ota-gateway uplink export``'s cursor: kept whichever sinks run
_HELD_FOR = "SELECT COALESCE(SUM(size), 0) FROM records WHERE kind = ? AND json_extract(body, '$.site') = ?"


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
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.sinks = tuple(sinks)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # one connection, used by the writer thread and by readers
        self._pending: list[Pending] = []
        self._cv = threading.Condition()
        self._closed = False
        self._bytes = 0
        self._held: dict[str, int] = {}  # append_bounded: an upper bound of each key's bytes held
        self.recovered: list[dict[str, Any]] = []  # a damaged database found at open (for /status)
        self._dropped: Counter[tuple[str, str]] = Counter()  # this run's drops (kind, reason), /metrics
        self._writer = threading.Thread(target=self._write_loop, name="outbox-writer", daemon=True)
        if open_now:
            self.open()

    def open(self) -> None:
        """Open (or create) the database and start the writer; blocking, idempotent."""
        if self._db is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                db = self._connect()
            except DamagedStateError as exc:
                self._set_aside(exc.problem)
                db = self._connect()
        except (sqlite3.Error, DamagedStateError, OSError) as exc:
            raise StorageError(f"cannot open the outbox {self.path}: {exc}", path=str(self.path)) from exc
        self._db = db
        self._bytes = self._scalar("SELECT COALESCE(SUM(size), 0) FROM records")
        self._register_sinks()
        self._writer.start()

    @seam
    def _register_sinks(self) -> None:
        with self._lock:
            register_sinks(self.db, self.sinks, EXPORT_SINK)

    def _connect(self) -> sqlite3.Connection:
        return connect_checked(self.path)

    def _set_aside(self, problem: str) -> None:
        self.recovered.append(set_aside(self.path, problem))

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError("the outbox is not open", path=str(self.path))
        return self._db

    # -- appending (group commit) ------------------------------------------------------------------

    def append_nowait(self, kind: str, body: dict[str, Any], now: float) -> asyncio.Future[int]:
        """Queue a record; the future resolves with its sequence number once it is committed."""
        text = json.dumps(body, separators=(",", ":"), sort_keys=True)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        with self._cv:
            if self._closed:
                raise StorageError("the outbox is closed", path=str(self.path))
            self._pending.append(Pending(kind, now, text, loop, fut))
            self._cv.notify()
        return fut

    async def append(self, kind: str, body: dict[str, Any], now: float) -> int:
        """Durable when it returns: the record's sequence number, after its commit."""
        return await self.append_nowait(kind, body, now)

    @seam
    def append_bounded(self, kind: str, texts: list[str], now: float, *, key: str, quota_bytes: int) -> int:
        """Blocking (a worker thread): the JSON ``texts`` as records of ``kind``, all in one commit,
        or none: :class:`OutboxFullError` when they would take the outbox past ``max_bytes`` or the
        records of ``kind`` whose body's ``site`` is ``key`` past ``quota_bytes``. Never sheds."""
        size = sum(len(t) for t in texts)
        with self._lock:
            held = self._held.get(key)
            if held is None or held + size > quota_bytes:  # an upper bound: counted again near the quota
                held = self._held[key] = self._scalar_locked(_HELD_FOR, (kind, key))
            if held + size > quota_bytes:
                raise OutboxFullError(f"{key} holds {held} bytes of the outbox, its quota is {quota_bytes}")
            if self._bytes + size > self.max_bytes:
                self._bytes = self._scalar_locked("SELECT COALESCE(SUM(size), 0) FROM records")
            if self._bytes + size > self.max_bytes:
                raise OutboxFullError(f"the outbox is full ({self._bytes} of {self.max_bytes} bytes)")
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                rows = ((kind, now, t, len(t)) for t in texts)
                cur.executemany("INSERT INTO records(kind, at, body, size) VALUES (?, ?, ?, ?)", rows)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self._bytes += size
            self._held[key] = held + size
        return len(texts)

    @seam
    def append_once(self, kind: str, body: dict[str, Any], now: float, *, key: str) -> bool:
        """Blocking: the record with ``key`` in one commit; False (nothing written) when ``key`` is known."""
        with self._lock:
            size = insert_once(self.db, kind, now, body, key)
            self._bytes += size
        return size > 0

    def _write_loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if not self._pending and self._closed:
                    return
            time.sleep(GROUP_COMMIT_S)  # let concurrent appends join this commit
            with self._cv:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            # A caller that gave up (cancelled) before its commit: its record is not written.
            # (Reading another thread's future state is racy only towards writing it anyway.)
            batch = [p for p in batch if not p.fut.cancelled()]
            if not batch:
                continue
            result: list[int] | BaseException
            try:
                result = self._commit(batch)
            except sqlite3.Error as exc:
                result = StorageError(f"outbox write failed: {exc}", path=str(self.path))
            # One hand-off per event loop and commit, not one per record.
            by_loop: dict[
                asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int | BaseException]]
            ] = {}
            for i, p in enumerate(batch):
                outcome = result if isinstance(result, BaseException) else result[i]
                by_loop.setdefault(p.loop, []).append((p.fut, outcome))
            for loop, items in by_loop.items():
                try:
                    loop.call_soon_threadsafe(resolve, items)
                except RuntimeError:
                    pass  # that loop is closed: nobody waits any more

    def _commit(self, batch: list[Pending]) -> list[int]:
        with self._lock:
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                seqs = []
                for kind, at, text, *_ in batch:
                    cur.execute(
                        "INSERT INTO records(kind, at, body, size) VALUES (?, ?, ?, ?)",
                        (kind, at, text, len(text)),
                    )
                    seqs.append(int(cur.lastrowid or 0))
                    self._bytes += len(text)
                if self._bytes > self.max_bytes:  # counted again: `uplink export` may have deleted some
                    self._bytes = self._scalar_locked("SELECT COALESCE(SUM(size), 0) FROM records")
                if self._bytes > self.max_bytes:
                    self._shed(cur, self._bytes - self.max_bytes, "over max_bytes")
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                self._bytes = self._scalar_locked("SELECT COALESCE(SUM(size), 0) FROM records")
                raise
            return seqs

    def _shed(self, cur: sqlite3.Cursor, excess: int, reason: str) -> None:
        """Drop records, lowest priority kind first and oldest first, until ``excess`` bytes are gone."""
        order = [*DROP_ORDER, None]
        for kind in order:
            if excess <= 0:
                return
            if kind is None:
                rows = cur.execute("SELECT seq, kind, size FROM records ORDER BY seq LIMIT 10000").fetchall()
            else:
                rows = cur.execute(
                    "SELECT seq, kind, size FROM records WHERE kind = ? ORDER BY seq LIMIT 10000", (kind,)
                ).fetchall()
            for seq, k, size in rows:
                if excess <= 0:
                    break
                cur.execute("DELETE FROM records WHERE seq = ?", (seq,))
                self._count_drop(cur, k, reason)
                excess -= size
                self._bytes -= size

    def _count_drop(self, cur: sqlite3.Cursor, kind: str, reason: str) -> None:
        self._dropped[(kind, reason)] += 1
        cur.execute(
            "INSERT INTO drops(kind, reason, count) VALUES (?, ?, 1) "
            "ON CONFLICT(kind, reason) DO UPDATE SET count = count + 1",
            (kind, reason),
        )

    # -- reading and acknowledging -------------------------------------------------------------------

    @seam
    def acked(self, sink: str) -> int:
        return self._scalar("SELECT COALESCE((SELECT acked FROM cursors WHERE sink = ?), 0)", (sink,))

    @seam
    def peek(
        self, sink: str, max_records: int = 500, max_bytes: int = 1 << 20, *, after: int | None = None
    ) -> list[Record]:
        """The oldest records this sink has not acknowledged (at least one, even if large); with
        ``after``, those past that sequence number instead (a reader paging ahead of its cursor)."""
        with self._lock:
            rows = self.db.execute(
                "SELECT seq, kind, at, body, size FROM records WHERE seq > "
                "COALESCE(?, (SELECT acked FROM cursors WHERE sink = ?), 0) ORDER BY seq LIMIT ?",
                (after, sink, max_records),
            ).fetchall()
        out: list[Record] = []
        total = 0
        for seq, kind, at, body, size in rows:
            if out and total + size > max_bytes:
                break
            out.append(Record(seq, kind, at, json.loads(body)))
            total += size
        return out

    @seam
    def ack(self, sink: str, up_to_seq: int) -> None:
        """``sink`` has every record up to ``up_to_seq``; records every sink has are deleted."""
        with self._lock:
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            cur.execute(
                "INSERT INTO cursors(sink, acked) VALUES (?, ?) "
                "ON CONFLICT(sink) DO UPDATE SET acked = MAX(acked, excluded.acked)",
                (sink, up_to_seq),
            )
            floor = min(
                (
                    cur.execute(
                        "SELECT COALESCE((SELECT acked FROM cursors WHERE sink = ?), 0)", (s,)
                    ).fetchone()[0]
                    for s in self.sinks
                ),
                default=up_to_seq,
            )
            freed = cur.execute(
                "SELECT COALESCE(SUM(size), 0) FROM records WHERE seq <= ?", (floor,)
            ).fetchone()[0]
            cur.execute("DELETE FROM records WHERE seq <= ?", (floor,))
            cur.execute("COMMIT")
            self._bytes -= int(freed)

    @seam
    def expire(self, now: float) -> int:
        """Drop records older than ``max_age_s`` (counted); returns how many."""
        with self._lock:
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            rows = cur.execute(
                "SELECT seq, kind, size FROM records WHERE at < ?", (now - self.max_age_s,)
            ).fetchall()
            for seq, kind, size in rows:
                cur.execute("DELETE FROM records WHERE seq = ?", (seq,))
                self._count_drop(cur, kind, "older than max_age_s")
                self._bytes -= size
            cur.execute("COMMIT")
        return len(rows)

    @seam
    def count_drop(self, kind: str, reason: str, n: int = 1) -> None:
        """Count records lost outside the outbox's own bounds (e.g. refused by the cloud)."""
        with self._lock:
            self._dropped[(kind, reason)] += n
            self.db.execute(
                "INSERT INTO drops(kind, reason, count) VALUES (?, ?, ?) "
                "ON CONFLICT(kind, reason) DO UPDATE SET count = count + excluded.count",
                (kind, reason, n),
            )

    @seam
    def take_drops(self) -> dict[str, dict[str, int]]:
        """Drop counts since the last call (they then go upstream as a ``drops`` record)."""
        with self._lock:
            return drain_drops(self.db)

    @seam
    def depth(self) -> Depth:
        """Records waiting, their bytes, the oldest one's time, and this run's drops (for /metrics)."""
        with self._lock:
            return read_depth(self.db, dict(self._dropped))

    def stats(self) -> dict[str, Any]:
        """For the status page: never raises (a damaged outbox is shown as such)."""
        try:
            return self._stats()
        except sqlite3.Error as exc:
            return {"error": f"outbox {self.path} failed: {exc} (set aside at the next start)"}

    def _stats(self) -> dict[str, Any]:
        with self._lock:
            pending = self.db.execute(
                "SELECT kind, COUNT(*), SUM(size) FROM records GROUP BY kind"
            ).fetchall()
            drops = self.db.execute("SELECT kind, reason, count FROM drops").fetchall()
        return {
            "pending": {k: {"records": n, "bytes": b} for k, n, b in pending},
            "pending_bytes": self._bytes,
            "drops_unreported": {f"{k}:{r}": c for k, r, c in drops},
            "acked": {
                s: self._scalar("SELECT COALESCE((SELECT acked FROM cursors WHERE sink = ?), 0)", (s,))
                for s in self.sinks
            },
        }

    def _scalar(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        with self._lock:
            return self._scalar_locked(sql, args)

    def _scalar_locked(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        return int(self.db.execute(sql, args).fetchone()[0])

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        if self._writer.is_alive():
            self._writer.join(timeout=10)
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
