"""The floor of a durable MQTT ingest in CPython: the least a broker can do and keep the gateway's
rule (a QoS 1 message is committed to disk before its PUBACK), with nothing else.

Run by ``mqtt_broker.py --kinds python-floor`` (``python tests/bench/mqtt_floor.py PORT DIR``). One
``asyncio.Protocol`` per connection; CONNECT gets its CONNACK; each QoS 1 PUBLISH is framed, its
payload parsed with ``json.loads`` and its topic, payload and receive time appended to a batch; one
worker thread commits each batch to SQLite (WAL, ``synchronous=FULL``, as the outbox) and the
PUBACKs of that batch go out in one write per connection. No validation, aggregation, sessions,
subscriptions, limits or error handling: a figure for what the interpreter, the event loop and one
durable row cost per message, which bounds how close any Python broker that journals first can come
to mosquitto (issue 27, item 2).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CONNACK = b"\x20\x02\x00\x00"


class Journal:
    """Batches from every connection, one commit at a time in one worker thread."""

    def __init__(self, path: Path) -> None:
        self.pool = ThreadPoolExecutor(1)
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS records (topic TEXT, body TEXT, at REAL)")
        self.rows: list[tuple[str, str, float]] = []
        self.acks: dict[asyncio.Transport, list[bytes]] = {}
        self.busy = False

    def add(self, transport: asyncio.Transport, row: tuple[str, str, float], ack: bytes) -> None:
        self.rows.append(row)
        self.acks.setdefault(transport, []).append(ack)
        if not self.busy:
            self.busy = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        rows, acks = self.rows, self.acks
        self.rows, self.acks = [], {}
        asyncio.get_running_loop().run_in_executor(self.pool, self.commit, rows).add_done_callback(
            lambda _f: self.done(acks)
        )

    def commit(self, rows: list[tuple[str, str, float]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO records VALUES (?, ?, ?)", rows)
        self.db.execute("COMMIT")

    def done(self, acks: dict[asyncio.Transport, list[bytes]]) -> None:
        for transport, packets in acks.items():
            if not transport.is_closing():
                transport.write(b"".join(packets))
        if self.rows:
            self.flush()
        else:
            self.busy = False


class Connection(asyncio.Protocol):
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        while end - pos >= 2:
            length, shift, i = 0, 0, pos + 1
            while True:  # the remaining length: up to four bytes
                if i >= end:
                    self.buf = buf[pos:]
                    return
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                shift += 7
                i += 1
                if not byte & 0x80:
                    break
            if end - i < length:
                break
            self.packet(buf[pos], buf[i : i + length])
            pos = i + length
        self.buf = buf[pos:]

    def packet(self, head: int, body: bytes) -> None:
        kind = head >> 4
        assert self.transport is not None
        if kind == 1:
            self.transport.write(CONNACK)
        elif kind == 3:
            n = int.from_bytes(body[:2], "big")
            topic = body[2 : 2 + n].decode()
            if (head >> 1) & 3:
                pid = body[2 + n : 4 + n]
                payload = body[4 + n :].decode()
                json.loads(payload)
                self.journal.add(self.transport, (topic, payload, time.time()), b"\x40\x02" + pid)
        elif kind == 12:
            self.transport.write(b"\xd0\x00")
        elif kind == 14:
            self.transport.close()


async def main(port: int, folder: Path) -> None:
    journal = Journal(folder / "floor.sqlite")
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: Connection(journal), "127.0.0.1", port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2])))
