"""The outbox's SQLite file: its tables, opening it with a check, and setting a damaged one aside.

:class:`OutboxFile` is the open file the outbox's parts share (:mod:`gateway.uplink.outbox` builds
them): one connection, the lock every use of it takes, and the bytes its records hold. Its small
pieces live here too: a record, a pending record, and the seam that turns SQLite errors into
StorageError. A file that is not SQLite, has a damaged page (``PRAGMA quick_check``), is truncated,
or has tables of another shape is a :class:`~gateway.core.errors.DamagedStateError`; the outbox
file then moves it (and its ``-wal``/``-shm``) aside, never deleting it, and starts a fresh one.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from gateway.core.errors import DamagedStateError, StorageError
from gateway.runtime import atomic, jsonfast

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    at REAL NOT NULL,
    body TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS records_kind ON records(kind, seq);
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, acked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS drops (kind TEXT, reason TEXT, count INTEGER, PRIMARY KEY (kind, reason));
CREATE TABLE IF NOT EXISTS once (key TEXT PRIMARY KEY, seq INTEGER NOT NULL, at REAL NOT NULL);
"""
ONCE_KEEP_S = 8 * 86_400.0  # how long a key of Outbox.append_once is remembered
COLUMNS = {
    "records": {"seq", "kind", "at", "body", "size"},
    "cursors": {"sink", "acked"},
    "drops": {"kind", "reason", "count"},
    "once": {"key", "seq", "at"},
}


class Depth(NamedTuple):
    """How full the outbox is (:meth:`gateway.uplink.outbox.Outbox.depth`, for /metrics)."""

    records: int
    bytes: int
    oldest_at: float | None
    dropped: dict[tuple[str, str], int]  # (kind, reason) -> records dropped since start


class OutboxFile:
    """The open outbox file: one connection, used by the writer thread and by readers, always
    under :attr:`lock`; and :attr:`bytes` and :attr:`kinds`, the records' bytes in all and their
    count and bytes by kind, kept as every part changes them (:meth:`count`), so that /status and
    /metrics never scan the records (a backlog of millions took seconds, on the event loop and under
    the lock every commit waits for). Counted again where a bound depends on it, and whenever
    another process (``uplink export``) has written to the file since (``PRAGMA data_version``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.bytes = 0
        self.kinds: dict[str, list[int]] = {}  # kind -> [records, bytes]
        self._version: int | None = None  # data_version when last counted
        self.recovered: list[dict[str, Any]] = []  # a damaged database found at open (for /status)
        self._db: sqlite3.Connection | None = None

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def open(self) -> None:
        """Open (or create) the database, set aside and replaced when damaged; blocking."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                db = connect_checked(self.path)
            except DamagedStateError as exc:
                self.recovered.append(set_aside(self.path, exc.problem))
                db = connect_checked(self.path)
        except (sqlite3.Error, DamagedStateError, OSError) as exc:
            raise StorageError(f"cannot open the outbox {self.path}: {exc}", path=str(self.path)) from exc
        self._db = db
        with self.lock:
            self.recount_locked()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StorageError("the outbox is not open", path=str(self.path))
        return self._db

    def scalar(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        with self.lock:
            return self.scalar_locked(sql, args)

    def scalar_locked(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        return int(self.db.execute(sql, args).fetchone()[0])

    def count(self, kind: str, records: int, size: int) -> None:
        """``records`` of ``kind`` holding ``size`` bytes were added (or, negative, removed) in a
        commit under the lock."""
        tally = self.kinds.get(kind)
        if tally is None:
            tally = self.kinds[kind] = [0, 0]
        tally[0] += records
        tally[1] += size
        self.bytes += size

    def recount_locked(self) -> int:
        """The records counted again (another process, ``uplink export``, may delete some): one
        scan. Returns their bytes."""
        rows = self.db.execute("SELECT kind, COUNT(*), SUM(size) FROM records GROUP BY kind").fetchall()
        self.kinds = {kind: [int(n), int(size)] for kind, n, size in rows}
        self.bytes = sum(size for _, size in self.kinds.values())
        self._version = self.scalar_locked("PRAGMA data_version")
        return self.bytes

    def pending_locked(self) -> dict[str, tuple[int, int]]:
        """Records and bytes by kind, without a scan unless another process wrote since."""
        if self.scalar_locked("PRAGMA data_version") != self._version:
            self.recount_locked()
        return {kind: (n, size) for kind, (n, size) in self.kinds.items() if n}

    def close(self) -> None:
        with self.lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def connect_checked(path: Path) -> sqlite3.Connection:
    """Open, check (``PRAGMA quick_check`` and the tables' columns), create what is missing.

    DamagedStateError when the file is not a sound outbox: not SQLite, a damaged page, a
    truncated file, or tables of another shape. Other errors (locked, disk) propagate."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        check = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
        if check != ["ok"]:
            raise DamagedStateError(str(path), f"damaged ({'; '.join(map(str, check))[:200]})")
        for table, columns in COLUMNS.items():  # before creating what is missing
            found = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if found and found != columns:
                raise DamagedStateError(str(path), f"wrong schema (table {table}: {sorted(found)})")
        db.executescript(SCHEMA)
    except sqlite3.OperationalError:
        db.close()
        raise
    except sqlite3.DatabaseError as exc:  # SQLITE_CORRUPT, SQLITE_NOTADB: a damaged file
        db.close()
        raise DamagedStateError(str(path), f"damaged ({exc})") from exc
    except DamagedStateError:
        db.close()
        raise
    return db


def register_sinks(db: sqlite3.Connection, sinks: Sequence[str], kept: str) -> None:
    """Each sink in use has a cursor row, and only they and ``kept`` (the export's): ``ota-gateway
    uplink export``, another process, reads the rows to learn whose records it must not delete."""
    keep = [*sinks, kept]
    db.execute("BEGIN IMMEDIATE")
    try:
        db.executemany("INSERT OR IGNORE INTO cursors(sink, acked) VALUES (?, 0)", [(s,) for s in sinks])
        db.execute(f"DELETE FROM cursors WHERE sink NOT IN ({','.join('?' * len(keep))})", keep)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def cursor_sinks(db: sqlite3.Connection) -> list[str]:
    """The sinks with a cursor row (those a running gateway registered, see :func:`register_sinks`)."""
    return [row[0] for row in db.execute("SELECT sink FROM cursors ORDER BY sink")]


def set_aside(path: Path, problem: str) -> dict[str, Any]:
    """Move the damaged database and its -wal/-shm aside (never deleted) for a fresh outbox."""
    stamp = time.time()
    moved = atomic.move_aside(path, stamp)
    for suffix in ("-wal", "-shm"):
        atomic.move_aside(path.with_name(path.name + suffix), stamp)
    action = (
        "moved aside with its -wal/-shm and a fresh outbox opened; "
        "how many unsent records were lost is unknown"
    )
    return atomic.recovered(path, problem, action, moved)


@dataclass(frozen=True)
class Record:
    seq: int
    kind: str
    at: float
    body: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "at": self.at, "body": self.body}


class Pending(NamedTuple):
    """A record waiting for the outbox's next group commit, and who waits for its sequence number."""

    kind: str
    at: float
    text: str
    loop: asyncio.AbstractEventLoop
    fut: asyncio.Future[int]


T = TypeVar("T")


def seam(method: Callable[..., T]) -> Callable[..., T]:
    """SQLite errors at run time (a page damaged under us, the disk) become a StorageError naming
    the file: the uplink backs off and the status page says so; the next start sets the file aside."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise StorageError(
                f"outbox {self.path} failed: {exc} (a damaged file is set aside at the next start)",
                path=str(self.path),
            ) from exc

    return wrapper


def resolve(items: list[tuple[asyncio.Future[int], int | BaseException]]) -> None:
    for fut, outcome in items:
        if fut.done():
            continue
        if isinstance(outcome, BaseException):
            fut.set_exception(outcome)
        else:
            fut.set_result(outcome)


def insert_once(db: sqlite3.Connection, kind: str, at: float, body: dict[str, Any], key: str) -> int:
    """One commit: the record and its ``key`` (keys older than ONCE_KEEP_S forgotten first); the
    bytes written, 0 (nothing written) when the key is known."""
    text = jsonfast.encode_sorted(body)  # as Outbox.append_nowait writes it
    cur = db.cursor()
    cur.execute("BEGIN IMMEDIATE")
    try:
        cur.execute("DELETE FROM once WHERE at < ?", (at - ONCE_KEEP_S,))
        if cur.execute("SELECT 1 FROM once WHERE key = ?", (key,)).fetchone() is not None:
            cur.execute("COMMIT")
            return 0
        cur.execute(
            "INSERT INTO records(kind, at, body, size) VALUES (?, ?, ?, ?)", (kind, at, text, len(text))
        )
        cur.execute("INSERT INTO once(key, seq, at) VALUES (?, ?, ?)", (key, int(cur.lastrowid or 0), at))
        cur.execute("COMMIT")
        return len(text)
    except BaseException:
        cur.execute("ROLLBACK")
        raise


def drain_drops(db: sqlite3.Connection) -> dict[str, dict[str, int]]:
    """The drop counts, cleared in the same commit."""
    cur = db.cursor()
    cur.execute("BEGIN IMMEDIATE")
    rows = cur.execute("SELECT kind, reason, count FROM drops").fetchall()
    cur.execute("DELETE FROM drops")
    cur.execute("COMMIT")
    out: dict[str, dict[str, int]] = {}
    for kind, reason, count in rows:
        out.setdefault(kind, {})[reason] = count
    return out


def read_depth(file: OutboxFile, dropped: dict[tuple[str, str], int]) -> Depth:
    """Under the lock: the tallies, and the oldest record's time from the primary key (records are
    appended in time order), never a scan."""
    pending = file.pending_locked()
    oldest = file.db.execute("SELECT at FROM records ORDER BY seq LIMIT 1").fetchone()
    n, size = sum(n for n, _ in pending.values()), sum(s for _, s in pending.values())
    return Depth(n, size, oldest[0] if oldest else None, dropped)
