"""The durable outbox on real files: numbering across restarts, cursors, overflow policy, kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.core.errors import StorageError
from gateway.uplink.append import MAX_BATCH
from gateway.uplink.outbox import Outbox

ROOT = Path(__file__).resolve().parents[2]


async def test_sequence_numbers_survive_restarts_and_cursors_are_per_sink(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20, max_age_s=3600, sinks=["http", "mqtt"])
    seqs = [await box.append("aggregate", {"n": i}, 100.0) for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    box.ack("http", seqs[2])
    assert [r.body["n"] for r in box.peek("http")] == [3, 4]
    assert [r.body["n"] for r in box.peek("mqtt")] == [0, 1, 2, 3, 4]
    box.close()
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20, max_age_s=3600, sinks=["http", "mqtt"])
    assert [r.body["n"] for r in box.peek("http")] == [3, 4]  # cursors persisted
    box.ack("mqtt", seqs[4])
    box.ack("http", seqs[4])
    assert box.stats()["pending_bytes"] == 0  # every sink has them: deleted
    later = await box.append("aggregate", {"n": 5}, 100.0)
    assert later > seqs[-1]  # never reused, even after the table emptied
    box.close()


async def test_overflow_sheds_samples_first_then_aggregates_and_counts_it(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_bytes=4000, max_age_s=3600, sinks=["http"])
    for i in range(20):
        await box.append("decision", {"i": i, "pad": "d" * 20}, 1.0)
    for i in range(40):
        await box.append("sample", {"i": i, "pad": "s" * 60}, 1.0)
    for i in range(20):
        await box.append("aggregate", {"i": i, "pad": "a" * 60}, 1.0)
    kinds = [r.kind for r in box.peek("http", max_records=10_000, max_bytes=1 << 30)]
    assert kinds.count("decision") == 20  # kept longest
    assert kinds.count("sample") < 40 and kinds.count("aggregate") == 20
    assert box.stats()["pending_bytes"] <= 4000
    drops = box.take_drops()
    assert drops["sample"]["over max_bytes"] == 40 - kinds.count("sample") and "aggregate" not in drops
    assert box.take_drops() == {}
    box.close()


async def test_records_past_their_age_are_dropped_and_counted(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20, max_age_s=60, sinks=["http"])
    await box.append("health", {"old": True}, 1000.0)
    await box.append("health", {"old": False}, 1100.0)
    assert box.expire(1100.0) == 1
    assert [r.body for r in box.peek("http")] == [{"old": False}]
    assert box.take_drops() == {"health": {"older than max_age_s": 1}}
    box.close()


def test_kill_9_loses_nothing_that_was_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("append_forever.py")), str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    acknowledged: list[int] = []
    for line in proc.stdout:
        acknowledged += [int(x) for x in line.split()]
        if len(acknowledged) >= 400:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    box = Outbox(path, max_bytes=1 << 30, max_age_s=1e9, sinks=["http"])
    held = {r.seq for r in box.peek("http", max_records=100_000, max_bytes=1 << 30)}
    assert set(acknowledged) <= held
    box.close()


def _damage_outbox(path: Path, how: str) -> None:
    if how == "garbage-pages":
        raw = path.read_bytes()
        path.write_bytes(raw[:100] + os.urandom(len(raw) - 100))  # the header stays
    elif how == "truncated":
        with path.open("r+b") as f:
            f.truncate(path.stat().st_size // 2)
    elif how == "not-sqlite":
        path.write_bytes(b"{}" * 3000)
    else:
        path.unlink()
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, payload BLOB)")
        db.commit()
        db.close()


@pytest.mark.parametrize("how", ["garbage-pages", "truncated", "not-sqlite", "wrong-schema"])
async def test_a_damaged_outbox_is_moved_aside_and_a_fresh_one_opened(tmp_path: Path, how: str) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path, max_bytes=10_000_000, max_age_s=3600)
    for i in range(300):
        await box.append("sample", {"i": i, "pad": "x" * 200}, 1.0)
    box.close()
    _damage_outbox(path, how)
    again = Outbox(path, max_bytes=10_000_000, max_age_s=3600)  # never an uncaught DatabaseError
    try:
        (rec,) = again.recovered
        assert rec["file"] == str(path) and "unknown" in rec["action"]
        aside = await asyncio.to_thread(lambda: [p.name for p in tmp_path.glob("outbox.sqlite.corrupt-*")])
        assert len(aside) == 1 and rec["moved_to"] == str(tmp_path / aside[0])
        assert await again.append("event", {"ok": True}, 2.0) >= 1  # and it works
        assert [r.body for r in again.peek("default")] == [{"ok": True}]
    finally:
        again.close()


async def test_an_outbox_that_fails_while_running_is_a_storage_error_and_a_status_line(
    tmp_path: Path,
) -> None:
    """Damage found at run time (here the records table dropped behind its back) is translated at
    the seam: the uplink gets a StorageError it backs off on, the status page a line, never a 500."""
    from gateway.core.errors import StorageError
    from gateway.runtime.stats import Stats
    from gateway.uplink.forwarder import Forwarder
    from gateway.uplink.sinks import Sink

    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20, max_age_s=3600, sinks=["http"])
    await box.append("sample", {"n": 1}, 0.0)
    with sqlite3.connect(tmp_path / "o.sqlite") as other:
        other.execute("DROP TABLE records")
    with pytest.raises(StorageError, match=r"o\.sqlite"):
        box.peek("http")
    assert "o.sqlite" in box.stats()["error"]

    class Never(Sink):
        name = "http"

        async def deliver(self, records: object) -> None:
            raise AssertionError("nothing can be read, so nothing is delivered")

    stats = Stats()
    fwd = Forwarder(box, [Never()], stats, retry_initial_s=0.01, retry_max_s=0.02, idle_s=0.01)
    task = asyncio.create_task(fwd.run())
    deadline = asyncio.get_running_loop().time() + 5
    while stats.snapshot().get("uplink.outbox_errors", 0) < 3:
        assert asyncio.get_running_loop().time() < deadline and not task.done()
        await asyncio.sleep(0.01)  # polling a condition with a deadline
    task.cancel()
    box.close()


async def test_each_append_of_a_grouped_commit_gets_its_own_records_number(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20, max_age_s=3600, sinks=["http"])
    try:
        # grouped commits of many appends each (they arrive while one commits), of sizes that
        # are and are not the writer's runs of records per INSERT
        for n in (1, 7, 200, 255, 1000, 1301):
            first = await box.append("health", {"i": -1}, 1.0)
            seqs = await asyncio.gather(*(box.append("sample", {"i": i}, 1.0 + i) for i in range(n)))
            assert len(set(seqs)) == n and min(seqs) > first
            got = {
                r.seq: (r.body["i"], r.at) for r in box.peek("http", max_records=10_000, max_bytes=1 << 30)
            }
            assert [got[s] for s in seqs] == [(i, 1.0 + i) for i in range(n)]
            box.ack("http", max(seqs))
    finally:
        box.close()


async def test_appends_of_this_loop_turn_are_committed_at_close(tmp_path: Path) -> None:
    """Appends reach the writer at the end of the loop's turn; a close in the same turn still
    commits them (and their futures say so), and an append after it is refused."""
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20, max_age_s=3600, sinks=["http"])
    futs = [box.append_nowait("sample", {"i": i}, 1.0) for i in range(10)]
    box.close()  # no await since: none of them handed over yet
    seqs = [await f for f in futs]
    assert seqs == sorted(seqs) and len(set(seqs)) == 10
    with pytest.raises(StorageError):
        box.append_nowait("sample", {"i": 10}, 1.0)
    again = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 20, max_age_s=3600, sinks=["http"])
    try:
        assert [r.body["i"] for r in again.peek("http")] == list(range(10))
    finally:
        again.close()


async def test_grouped_appends_of_a_loop_turn_share_one_future_and_one_commit(tmp_path: Path) -> None:
    """A turn's grouped appends (the ingest's samples) share one future, one per ``MAX_BATCH``
    records of a busy turn, and each resolves only once every record appended with it is on disk."""
    path = tmp_path / "o.sqlite"
    box = Outbox(path, max_bytes=1 << 30, max_age_s=3600, sinks=["http"])

    def on_disk(n: int) -> set[int]:  # from another connection
        db = sqlite3.connect(path)
        try:
            rows = db.execute(
                "SELECT json_extract(body, '$.i') FROM records WHERE kind = 'sample'"
                " AND json_extract(body, '$.n') = ?",
                (n,),
            ).fetchall()
            return {int(i) for (i,) in rows}
        finally:
            db.close()

    try:
        for n in (1, 999, 1000, 2500):
            futs = [box.append_grouped("sample", {"n": n, "i": i}, 1.0) for i in range(n)]
            plain = box.append_nowait("health", {"n": n}, 1.0)
            futs.append(box.append_grouped("sample", {"n": n, "i": n}, 1.0))
            assert all(f is not plain for f in futs)
            groups: dict[int, list[int]] = {}  # a shared future's id: the records appended with it
            for i, f in enumerate(futs):
                groups.setdefault(id(f), []).append(i)
            # the turn's records (the grouped ones and the plain one) go over in runs of MAX_BATCH
            assert len(groups) == 1 + (n + 1) // MAX_BATCH, n
            seen: list[bool] = []
            for records in groups.values():
                futs[records[0]].add_done_callback(
                    lambda _f, records=records, n=n, seen=seen: seen.append(set(records) <= on_disk(n))
                )  # checked as it resolves
            await asyncio.gather(*(asyncio.shield(futs[r[0]]) for r in groups.values()), plain)
            assert seen == [True] * len(groups), n
        await asyncio.sleep(0)
        assert box.append_grouped("sample", {"i": -1}, 1.0) is not futs[-1]  # a new turn's
    finally:
        box.close()


async def test_a_turn_cut_at_max_batch_leaves_the_next_turn_whole(tmp_path: Path) -> None:
    """A turn handed over at ``MAX_BATCH`` records still has its end-of-turn call queued; that call
    must not hand over the next turn's first appends, which would cut the next turn in two (two
    futures and two commits where one would do)."""
    box = Outbox(tmp_path / "o.sqlite", max_bytes=1 << 30, max_age_s=3600, sinks=["http"])
    loop = asyncio.get_running_loop()
    later: list[asyncio.Future[int]] = []
    try:
        cut = [box.append_grouped("sample", {"i": i}, 1.0) for i in range(MAX_BATCH)]  # handed over
        # queued after the cut turn's end-of-turn call, before the next turn's
        loop.call_soon(lambda: later.append(box.append_grouped("sample", {"i": -2}, 1.0)))
        nxt = box.append_grouped("sample", {"i": -1}, 1.0)  # the next turn begins
        assert nxt is not cut[0]
        await asyncio.sleep(0)
        assert later == [nxt]  # one turn: one future, one commit
        await asyncio.gather(asyncio.shield(cut[0]), asyncio.shield(nxt))
    finally:
        box.close()
