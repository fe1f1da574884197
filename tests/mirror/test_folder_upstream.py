"""The folder upstream's stream (``file://`` or a path: air-gapped sites), cancelled mid-step.

A cancellation (the gateway stopping, a transfer abandoned) while the open or a read runs in its
worker thread must neither leak the file the thread opened nor close the file under a read still
running. The slow step is a real sleep in front of the real call (the one fault injected)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from gateway.mirror import upstream_dir as U


async def test_a_reader_cancelled_while_the_file_opens_leaves_it_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "model.bin").write_bytes(b"x" * 1000)
    opened: list[BinaryIO] = []
    started = threading.Event()

    def slow_open(path: Path) -> BinaryIO:
        started.set()
        time.sleep(0.3)
        f = path.open("rb")
        opened.append(f)
        return f

    monkeypatch.setattr(U, "_open_binary", slow_open)
    stream = await U.DirUpstream(tmp_path).stream("model.bin", offset=0, if_range=None)

    async def read_all() -> bytes:
        return b"".join([c async for c in stream.chunks()])

    reader = asyncio.ensure_future(read_all())
    await asyncio.to_thread(started.wait, 5)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert len(opened) == 1 and opened[0].closed  # the thread's file, closed for the cancelled reader


async def test_a_reader_cancelled_during_a_read_closes_the_file_after_the_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "model.bin").write_bytes(b"x" * 1000)
    seen: dict[str, Any] = {}
    reading = threading.Event()

    class SlowFile:
        def __init__(self, f: BinaryIO) -> None:
            self.f = f

        def seek(self, n: int) -> int:
            return self.f.seek(n)

        def read(self, n: int) -> bytes:
            reading.set()
            time.sleep(0.3)
            seen["closed_during_read"] = self.f.closed
            return self.f.read(n)

        def close(self) -> None:
            self.f.close()

    monkeypatch.setattr(U, "_open_binary", lambda path: SlowFile(path.open("rb")))
    stream = await U.DirUpstream(tmp_path).stream("model.bin", offset=0, if_range=None)
    gen = stream.chunks()
    reader = asyncio.ensure_future(gen.__anext__())
    await asyncio.to_thread(reading.wait, 5)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert seen["closed_during_read"] is False  # the read ran to its end on an open file
    await gen.aclose()
