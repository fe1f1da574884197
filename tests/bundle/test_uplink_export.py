"""``ota-gateway uplink export``: the records past the export's cursor into a whole file; the cursor
moves only once the file is complete, also when the process is killed at a random instant."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.core import settings as S
from gateway.uplink.export import export_records, open_outbox
from gateway.uplink.outbox import EXPORT_SINK, Outbox
from tests.peers import ROOT

SEEDS = int(os.environ.get("GATE_BUNDLE_SEEDS", "3"))


def read_export(path: Path) -> tuple[dict[str, object], list[dict[str, object]]]:
    """The header and the records of a whole export file; AssertionError when it is not whole."""
    lines = path.read_bytes().splitlines(keepends=True)
    header, body, trailer = json.loads(lines[0]), lines[1:-1], json.loads(lines[-1])
    assert header["format"] == "ota-gateway-uplink/1" and trailer["end"] is True
    assert trailer["records"] == len(body)
    assert trailer["sha256"] == hashlib.sha256(b"".join(body)).hexdigest()
    records = [json.loads(line) for line in body]
    if records:
        assert trailer["last_seq"] == records[-1]["seq"]
    return header, records


async def fill(path: Path, n: int, sinks: tuple[str, ...] = (EXPORT_SINK,), pad: int = 0) -> None:
    outbox = Outbox(path, max_bytes=1 << 30, max_age_s=1e9, sinks=sinks)
    try:
        futs = [outbox.append_nowait("event", {"i": i, "pad": "x" * pad}, time.time()) for i in range(n)]
        await asyncio.gather(*futs)
    finally:
        outbox.close()


def settings(data: Path, **uplink: str) -> S.Settings:
    return S.Settings(site="test-site", data_dir=str(data), uplink=S.UplinkSettings(**uplink))  # type: ignore[arg-type]


async def test_an_export_carries_the_pending_records_then_moves_the_cursor(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await fill(data / "outbox.sqlite", 250)
    outbox = open_outbox(settings(data))
    try:
        done = export_records(outbox, tmp_path / "up-1.jsonl", site="test-site")
        assert (done.records, done.after_seq, done.last_seq) == (250, 0, 250)
        header, records = read_export(done.path)
        assert header["after_seq"] == 0 and [r["body"]["i"] for r in records] == list(range(250))  # type: ignore[index]
        assert outbox.acked(EXPORT_SINK) == 250
        assert outbox.peek(EXPORT_SINK, after=0) == []  # the export is this site's only sink: gone
        again = export_records(outbox, tmp_path / "up-2.jsonl", site="test-site")
        assert again.records == 0 and read_export(again.path)[1] == []
    finally:
        outbox.close()


async def test_beside_a_network_sink_records_stay_until_that_sink_has_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await fill(data / "outbox.sqlite", 40, sinks=("http",))
    outbox = open_outbox(settings(data))  # http is registered in the file: its records are kept
    try:
        assert export_records(outbox, tmp_path / "up.jsonl", site="test-site").records == 40
        assert len(outbox.peek("http")) == 40
    finally:
        outbox.close()
    gateway_side = Outbox(data / "outbox.sqlite", max_bytes=1 << 30, max_age_s=1e9, sinks=("http",))
    try:
        gateway_side.ack("http", 40)
        assert gateway_side.peek("http", after=0) == []
    finally:
        gateway_side.close()


def export_process(data: Path, dest: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable,
        "-m",
        "gateway",
        "uplink",
        "export",
        str(dest),
        "--data",
        str(data),
        "--site",
        "test-site",
    ]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cursor(data: Path) -> int:
    outbox = open_outbox(settings(data))
    try:
        return outbox.acked(EXPORT_SINK)
    finally:
        outbox.close()


async def test_kill_9_at_a_random_instant_never_moves_the_cursor_past_a_whole_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await fill(data / "outbox.sqlite", 10_000, pad=300)
    probe = tmp_path / "probe"
    shutil.copytree(data, probe)
    started = time.monotonic()
    proc = export_process(probe, tmp_path / "probe.jsonl")
    assert await asyncio.to_thread(proc.wait, 120) == 0
    full_s = time.monotonic() - started  # one whole export, start-up included, on this box now
    rnd = random.Random(20261202)
    landed = {"before the file": 0, "mid-write": 0, "after the file": 0}
    for seed in range(max(2, SEEDS - 1)):
        before = cursor(data)
        dest = tmp_path / f"up-{seed}.jsonl"
        proc = export_process(data, dest)
        await asyncio.sleep(rnd.uniform(0.5 * full_s, full_s))  # a random instant, not a synchronisation
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 30)
        after = cursor(data)
        if dest.exists():  # renamed into place: whole, and the cursor is at most its end
            _, records = read_export(dest)
            assert after in (before, records[-1]["seq"] if records else before)
            landed["after the file"] += 1
        else:
            assert after == before, "the cursor moved without a whole file"
            mid = await asyncio.to_thread(os.listdir, tmp_path)
            mid = [n for n in mid if n.startswith(f".up-{seed}.jsonl.") and n.endswith(".part")]
            landed["mid-write" if mid else "before the file"] += 1
    print(f"kill -9 instants: {landed} (a whole export took {full_s:.2f}s)")
    outbox = open_outbox(settings(data))  # and a whole one moves the cursor to the newest record
    try:
        done = export_records(outbox, tmp_path / "last.jsonl", site="test-site")
        assert outbox.acked(EXPORT_SINK) == done.last_seq == 10_000
    finally:
        outbox.close()


@pytest.mark.parametrize("uplink", [{}, {"ingest_url": "http://127.0.0.1:9/"}])
async def test_a_gateway_registers_its_sinks_for_the_export_to_read(
    tmp_path: Path, uplink: dict[str, str]
) -> None:
    from gateway.uplink.outbox_file import connect_checked, cursor_sinks

    data = tmp_path / "data"
    sinks = ("http",) if uplink else (EXPORT_SINK,)
    await fill(data / "outbox.sqlite", 1, sinks=sinks)
    db = connect_checked(data / "outbox.sqlite")
    try:
        assert set(cursor_sinks(db)) == set(sinks)
    finally:
        db.close()
