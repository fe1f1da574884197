"""/status and /metrics read the outbox's tallies, kept by every part that adds or removes records,
never a scan of the records: after any mix of appends (grouped, relayed, once), shedding past
``max_bytes``, expiry, acknowledgements, a failed commit and another process deleting records,
they equal what the file holds."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from gateway.core.errors import OutboxFullError, StorageError
from gateway.uplink.outbox import Outbox

KINDS = ("sample", "aggregate", "health", "decision", "relay")


def truth(path: Path) -> tuple[dict[str, dict[str, int]], int, float | None]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT kind, COUNT(*), SUM(size) FROM records GROUP BY kind").fetchall()
        oldest = db.execute("SELECT MIN(at) FROM records").fetchone()[0]
    finally:
        db.close()
    return {k: {"records": n, "bytes": b} for k, n, b in sorted(rows)}, sum(b for _, _, b in rows), oldest


def check(box: Outbox, path: Path) -> None:
    pending, size, oldest = truth(path)
    stats = box.stats()
    assert stats["pending"] == pending
    assert stats["pending_bytes"] == size
    depth = box.depth()
    assert (depth.records, depth.bytes, depth.oldest_at) == (
        sum(p["records"] for p in pending.values()),
        size,
        oldest,
    )


@pytest.mark.parametrize("seed", range(12))
async def test_the_tallies_equal_the_records_after_any_mix_of_changes(tmp_path: Path, seed: int) -> None:
    rnd = random.Random(seed)
    path = tmp_path / "o.sqlite"
    box = Outbox(path, max_bytes=rnd.choice([3000, 20_000, 1 << 20]), max_age_s=100, sinks=["http", "mqtt"])
    now = 1000.0
    try:
        for _ in range(80):
            op = rnd.choice(["append", "append", "many", "bounded", "once", "ack", "expire", "other"])
            now += rnd.uniform(0, 15)
            if op == "append":
                await box.append(rnd.choice(KINDS[:4]), {"pad": "x" * rnd.randint(0, 300)}, now)
            elif op == "many":  # concurrent appends: one grouped commit
                await asyncio.gather(
                    *(box.append(rnd.choice(KINDS[:4]), {"i": i}, now) for i in range(rnd.randint(2, 30)))
                )
            elif op == "bounded":
                texts = [f'{{"site":"child","i":{i}}}' for i in range(rnd.randint(1, 5))]
                try:
                    box.append_bounded("relay", texts, now, key="child", quota_bytes=rnd.choice([60, 2000]))
                except OutboxFullError:
                    pass
            elif op == "once":
                box.append_once("decision", {"k": rnd.randint(0, 3)}, now, key=f"k{rnd.randint(0, 3)}")
            elif op == "ack":
                last = box.peek("http", max_records=rnd.randint(1, 40))
                if last:
                    box.ack(rnd.choice(["http", "mqtt"]), last[-1].seq)
            elif op == "expire":
                box.expire(now)
            else:  # another process (``uplink export``) deletes some records
                db = sqlite3.connect(path, timeout=10)
                db.execute(
                    "DELETE FROM records WHERE seq IN (SELECT seq FROM records ORDER BY random() LIMIT 3)"
                )
                db.commit()
                db.close()
            check(box, path)
    finally:
        box.close()


async def test_a_refused_commit_leaves_the_tallies_true(tmp_path: Path) -> None:
    """A commit the file refuses (another connection holds the write lock: it fails before any
    row is written) counts nothing, and the tallies stay true for the next one."""
    path = tmp_path / "o.sqlite"
    box = Outbox(path, max_bytes=1 << 20, max_age_s=3600, sinks=["http"])
    try:
        await box.append("sample", {"a": 1}, 1.0)
        db = sqlite3.connect(path, timeout=0)  # another connection holds the write lock
        db.execute("BEGIN IMMEDIATE")
        box.file.db.execute("PRAGMA busy_timeout = 50")
        with pytest.raises(StorageError):
            await box.append("sample", {"a": 2}, 2.0)
        db.rollback()
        db.close()
        check(box, path)
        await box.append("health", {"a": 3}, 3.0)
        check(box, path)
    finally:
        box.close()


async def test_a_commit_that_fails_after_its_rows_are_counted_is_counted_again(tmp_path: Path) -> None:
    """The grouped commit counts its records once they are inserted, then sheds what is past
    ``max_bytes`` in the same transaction. When the file refuses that (a trigger another
    connection put on the drops table: a write that fails mid-commit), the commit rolls back, and
    the tallies that counted its records are counted again from the file."""
    path = tmp_path / "o.sqlite"
    box = Outbox(path, max_bytes=2000, max_age_s=3600, sinks=["http"])
    try:
        await asyncio.gather(*(box.append("sample", {"pad": "x" * 100}, 1.0) for _ in range(10)))
        check(box, path)
        db = sqlite3.connect(path)
        db.execute("CREATE TRIGGER refuse BEFORE INSERT ON drops BEGIN SELECT RAISE(ABORT, 'refused'); END")
        db.commit()
        with pytest.raises(StorageError):  # past max_bytes: the commit must shed, and cannot
            await asyncio.gather(*(box.append("health", {"pad": "y" * 100}, 2.0) for _ in range(10)))
        check(box, path)
        db.execute("DROP TRIGGER refuse")
        db.commit()
        db.close()
        await box.append("health", {"a": 3}, 3.0)
        check(box, path)
    finally:
        box.close()
