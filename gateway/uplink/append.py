"""The outbox's append path: group commit by one writer thread, and the two appends that commit
on their own (a relayed batch, all or none; a record with a key, once).

Appends are group-committed by one writer thread: every append that arrives while a commit is in
flight joins the next one (one fsync for all of them; the writer never sleeps to gather more, so an
append waits at most one commit behind the current one), and each caller's future resolves only
after its commit (so an MQTT PUBACK can wait for it). What a power cut can lose: nothing whose
``append`` completed. A ``kill -9`` loses nothing either (committed is committed); what was in
flight in the process at that instant (accepted from a device but not yet committed, a few
milliseconds' worth) was never acknowledged.

What must go when a commit takes the outbox past its bounds is :mod:`gateway.uplink.bounds`'s; it
is decided inside the same commit.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gateway.core.errors import StorageError
from gateway.runtime import jsonfast
from gateway.uplink.bounds import Bounds
from gateway.uplink.outbox_file import OutboxFile, Pending, insert_once, resolve, seam

MAX_BATCH = 1000  # records per commit at most
# The writer's INSERTs, by records per statement: powers of two up to 128 (512 parameters, under
# the 999 of SQLite before 3.32), so a few statement texts serve every batch from the statement cache.
_INSERT_RUNS = {
    n: "INSERT INTO records(kind, at, body, size) VALUES " + ",".join(["(?, ?, ?, ?)"] * n)
    for n in (1 << k for k in range(8))
}
_LONGEST_RUN = max(_INSERT_RUNS)


@dataclass(slots=True)
class _Turn:
    """One loop turn's appends not handed to the writer yet, and the future its grouped ones share."""

    records: list[Pending] = field(default_factory=list)
    shared: asyncio.Future[int] | None = None


class Appender:
    def __init__(self, file: OutboxFile, bounds: Bounds) -> None:
        self.file = file
        self.path = file.path
        self.bounds = bounds
        self._pending: deque[list[Pending]] = deque()  # handed over, for the writer's next commit
        self._turns: dict[asyncio.AbstractEventLoop, _Turn] = {}  # each loop's, not handed over yet
        self._cv = threading.Condition()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="outbox-writer", daemon=True)

    def start(self) -> None:
        self._writer.start()

    def close(self) -> None:
        """Commit what is queued (handed over or not yet), then stop the writer."""
        with self._cv:
            for loop in list(self._turns):
                self._pending.append(self._turns.pop(loop).records)
            self._closed = True
            self._cv.notify()
        if self._writer.is_alive():
            self._writer.join(timeout=10)

    def append_nowait(self, kind: str, body: dict[str, Any], now: float) -> asyncio.Future[int]:
        """Queue a record; the future resolves with its sequence number once it is committed.

        The appends of one event-loop turn reach the writer together, at the end of the turn
        (:meth:`_hand_over`), or as soon as ``MAX_BATCH`` of them wait: one lock and one wake-up of
        the writer for all of them. Taken per append, the lock and its ``notify`` were a tenth of
        the ingest's time."""
        return self._append(kind, body, now, grouped=False)

    def append_grouped(self, kind: str, body: dict[str, Any], now: float) -> asyncio.Future[int]:
        """:meth:`append_nowait` for a caller that only waits for durability (the ingest): the
        grouped appends of one loop turn share one future, resolved once all of them are committed
        (they reach the writer together, and it never splits what it is handed). One future per
        loop turn (or per ``MAX_BATCH`` records of a busy one), not per record, and an MQTT
        connection's acknowledgements behind it go out together (:mod:`gateway.broker.acks`).
        Never cancel the future (await it through ``asyncio.shield``): it is everyone's."""
        return self._append(kind, body, now, grouped=True)

    def _append(self, kind: str, body: dict[str, Any], now: float, *, grouped: bool) -> asyncio.Future[int]:
        text = jsonfast.encode_sorted(body)  # first: a body that is not JSON leaves nothing behind
        loop = asyncio.get_running_loop()
        if self._closed:
            raise StorageError("the outbox is closed", path=str(self.path))
        turn = self._turns.get(loop)
        if turn is None:
            turn = self._turns[loop] = _Turn()
            loop.call_soon(self._hand_over, loop, turn)
        fut = turn.shared if grouped else None
        if fut is None:
            fut = loop.create_future()
            if grouped:
                turn.shared = fut
        turn.records.append(Pending(kind, now, text, loop, fut))
        if len(turn.records) >= MAX_BATCH:
            self._hand_over(loop, turn)  # a whole commit's worth: the next appends start a new turn
        return fut

    def _hand_over(self, loop: asyncio.AbstractEventLoop, turn: _Turn) -> None:
        """``turn``'s appends, to the writer, unless they went already (``MAX_BATCH`` of them, or
        the outbox closed): on the loop's own thread, as each loop's turn is touched by that thread
        only. Its own turn only: the end-of-turn call of a turn cut at ``MAX_BATCH`` must not hand
        over the next turn's first appends early."""
        if self._turns.get(loop) is not turn:
            return
        del self._turns[loop]
        with self._cv:
            if not self._closed:
                self._pending.append(turn.records)
                self._cv.notify()
                return
        closed = StorageError("the outbox is closed", path=str(self.path))
        for p in turn.records:
            if not p.fut.done():
                p.fut.set_exception(closed)

    @seam
    def append_bounded(self, kind: str, texts: list[str], now: float, *, key: str, quota_bytes: int) -> int:
        """Blocking (a worker thread): the JSON ``texts`` as records of ``kind``, all in one commit,
        or none: :class:`OutboxFullError` when they would take the outbox past ``max_bytes`` or the
        records of ``kind`` whose body's ``site`` is ``key`` past ``quota_bytes``. Never sheds."""
        rows = [(kind, now, t, len(t)) for t in texts]
        size = sum(r[3] for r in rows)
        with self.file.lock:
            held = self.bounds.room_for(kind, key, size, quota_bytes)
            cur = self.file.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                _insert(cur, rows)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            self.file.count(kind, len(texts), size)
            self.bounds.took(key, held + size)
        return len(texts)

    @seam
    def append_once(self, kind: str, body: dict[str, Any], now: float, *, key: str) -> bool:
        """Blocking: the record with ``key`` in one commit; False (nothing written) when ``key`` is known."""
        with self.file.lock:
            size = insert_once(self.file.db, kind, now, body, key)
            if size:
                self.file.count(kind, 1, size)
        return size > 0

    def _write_loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if not self._pending and self._closed:
                    return
                batch = self._pending.popleft()
                while self._pending and len(batch) + len(self._pending[0]) <= MAX_BATCH:
                    batch += self._pending.popleft()
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
            # One hand-off per event loop and commit, not one per record; one entry per future
            # (a group's records follow each other in a turn's appends, or nearly; a group is
            # handed over whole, in at most MAX_BATCH records, so its commit is this one).
            by_loop: dict[
                asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], int | BaseException]]
            ] = {}
            last = None
            for i, p in enumerate(batch):
                if p.fut is last:
                    continue
                last = p.fut
                outcome = result if isinstance(result, BaseException) else result[i]
                by_loop.setdefault(p.loop, []).append((p.fut, outcome))
            for loop, items in by_loop.items():
                try:
                    loop.call_soon_threadsafe(resolve, items)
                except RuntimeError:
                    pass  # that loop is closed: nobody waits any more

    def _commit(self, batch: list[Pending]) -> list[int]:
        with self.file.lock:
            cur = self.file.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                rows = [(p.kind, p.at, p.text, len(p.text)) for p in batch]
                last = _insert(cur, rows)
                if last is None:  # never after an INSERT of one record or more
                    raise sqlite3.DatabaseError("no record number after the INSERT")
                counted: dict[str, list[int]] = {}
                for kind, _at, _text, size in rows:
                    c = counted.setdefault(kind, [0, 0])
                    c[0] += 1
                    c[1] += size
                for kind, (count, size) in counted.items():
                    self.file.count(kind, count, size)
                self.bounds.enforce(cur)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                self.file.recount_locked()
                raise
            return list(range(last - len(batch) + 1, last + 1))


def _insert(cur: sqlite3.Cursor, rows: list[tuple[str, float, str, int]]) -> int | None:
    """The records ``(kind, at, text, len(text))``; returns the last one's number (records inserted
    together under the write lock take consecutive numbers: AUTOINCREMENT), None for no records.

    A few multi-row INSERTs, not one per record (``executemany``): sqlite3 lets go of the GIL for
    every statement step and must take it back after, and while the event loop is busy (a site
    broker sending faster than we commit) each take waits up to the switch interval, 5 ms. Per
    record, a commit of 1,000 took 28 ms on average and up to 500 ms; in runs of up to 128, 21 ms
    and up to 104 ms. The group commit and a relayed batch (a worker thread) both insert here."""
    params: list[Any] = [field for row in rows for field in row]
    i, n = 0, len(rows)
    while i < n:
        run = min(_LONGEST_RUN, 1 << ((n - i).bit_length() - 1))
        cur.execute(_INSERT_RUNS[run], params[4 * i : 4 * (i + run)])
        i += run
    return cur.lastrowid if n else None
