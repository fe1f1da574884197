"""How far the outbox may grow, and what goes when it would grow past it, counted.

Bounds: ``max_bytes`` and ``max_age_s``. On overflow records are dropped by kind, in this order:
``sample`` (raw metrics) first, then ``aggregate``, then ``health``; events, inventory changes and
gate decisions last. Every drop is counted by kind and reason (this run's counts for /metrics, and
in the file's ``drops`` table until :meth:`Bounds.take_drops` takes them to go upstream as a
``drops`` record when delivery resumes). Records relayed for a child gateway are never shed to make
room: :meth:`Bounds.room_for` refuses their batch (:class:`OutboxFullError`) when it would take the
outbox past ``max_bytes`` or one sender's records past their quota.

Appending is :mod:`gateway.uplink.append`'s; this module only judges and sheds, inside the
appender's commit or in its own.
"""

from __future__ import annotations

import sqlite3
from collections import Counter

from gateway.core.errors import OutboxFullError
from gateway.uplink.outbox_file import OutboxFile, drain_drops, seam

DROP_ORDER = ("sample", "aggregate", "health")  # first to go; any other kind is kept longest
_HELD_FOR = "SELECT COALESCE(SUM(size), 0) FROM records WHERE kind = ? AND json_extract(body, '$.site') = ?"


class Bounds:
    def __init__(self, file: OutboxFile, *, max_bytes: int, max_age_s: float) -> None:
        self.file = file
        self.path = file.path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.dropped: Counter[tuple[str, str]] = Counter()  # this run's drops (kind, reason), /metrics
        self._held: dict[str, int] = {}  # room_for: an upper bound of each key's bytes held

    # -- inside the appender's commit (the file's lock held) ------------------------------------------

    def room_for(self, kind: str, key: str, size: int, quota_bytes: int) -> int:
        """The bytes the records of ``kind`` whose body's ``site`` is ``key`` hold, when ``size``
        more fit both its quota and ``max_bytes``; else :class:`OutboxFullError`. Never sheds."""
        held = self._held.get(key)
        if held is None or held + size > quota_bytes:  # an upper bound: counted again near the quota
            held = self._held[key] = self.file.scalar_locked(_HELD_FOR, (kind, key))
        if held + size > quota_bytes:
            raise OutboxFullError(f"{key} holds {held} bytes of the outbox, its quota is {quota_bytes}")
        if self.file.bytes + size > self.max_bytes:
            self.file.recount_locked()
        if self.file.bytes + size > self.max_bytes:
            raise OutboxFullError(f"the outbox is full ({self.file.bytes} of {self.max_bytes} bytes)")
        return held

    def took(self, key: str, held: int) -> None:
        """``key``'s records now hold ``held`` bytes (after a commit :meth:`room_for` allowed)."""
        self._held[key] = held

    def enforce(self, cur: sqlite3.Cursor) -> None:
        """After the appender's inserts, in its commit: shed what is over ``max_bytes``."""
        if self.file.bytes > self.max_bytes:  # counted again: `uplink export` may have deleted some
            self.file.recount_locked()
        if self.file.bytes > self.max_bytes:
            self._shed(cur, self.file.bytes - self.max_bytes, "over max_bytes")

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
                self.file.count(k, -1, -size)

    def _count_drop(self, cur: sqlite3.Cursor, kind: str, reason: str, n: int = 1) -> None:
        self.dropped[(kind, reason)] += n
        cur.execute(
            "INSERT INTO drops(kind, reason, count) VALUES (?, ?, ?) "
            "ON CONFLICT(kind, reason) DO UPDATE SET count = count + excluded.count",
            (kind, reason, n),
        )

    # -- on their own --------------------------------------------------------------------------------

    @seam
    def expire(self, now: float) -> int:
        """Drop records older than ``max_age_s`` (counted); returns how many. Records are appended in
        time order, so the oldest one answers "anything to do?" from the primary key alone."""
        cutoff = now - self.max_age_s
        with self.file.lock:
            oldest = self.file.db.execute("SELECT at FROM records ORDER BY seq LIMIT 1").fetchone()
            if oldest is None or oldest[0] >= cutoff:
                return 0
            cur = self.file.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            rows = cur.execute(
                "SELECT kind, COUNT(*), SUM(size) FROM records WHERE at < ? GROUP BY kind", (cutoff,)
            ).fetchall()
            cur.execute("DELETE FROM records WHERE at < ?", (cutoff,))
            for kind, n, size in rows:
                self._count_drop(cur, kind, "older than max_age_s", n)
                self.file.count(kind, -n, -size)
            cur.execute("COMMIT")
        return sum(n for _, n, _ in rows)

    @seam
    def count_drop(self, kind: str, reason: str, n: int = 1) -> None:
        """Count records lost outside the outbox's own bounds (e.g. refused by the cloud)."""
        with self.file.lock:
            self.dropped[(kind, reason)] += n
            self.file.db.execute(
                "INSERT INTO drops(kind, reason, count) VALUES (?, ?, ?) "
                "ON CONFLICT(kind, reason) DO UPDATE SET count = count + excluded.count",
                (kind, reason, n),
            )

    @seam
    def take_drops(self) -> dict[str, dict[str, int]]:
        """Drop counts since the last call (they then go upstream as a ``drops`` record)."""
        with self.file.lock:
            return drain_drops(self.file.db)
