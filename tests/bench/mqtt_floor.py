"""The floor of a durable MQTT ingest in CPython: the least a broker can do and keep the gateway's
rule (a QoS 1 message is committed to disk before its PUBACK), with nothing else.

Run by ``mqtt_broker.py --kinds python-floor`` (``python tests/bench/mqtt_floor.py PORT DIR``). One
``asyncio.Protocol`` per connection; CONNECT gets its CONNACK; each QoS 1 PUBLISH is framed and
decoded by the broker's own :mod:`gateway.broker.wire`, its payload parsed with ``json.loads``, and
its topic, payload and receive time appended to a batch; one worker thread commits each batch to
SQLite (WAL, ``synchronous=FULL``, as the outbox) and the PUBACKs of that batch go out in one write
per connection (a batch whose commit fails gets none). No validation, aggregation, sessions,
subscriptions or limits: a figure for what the interpreter, the event loop and one
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gateway.broker.wire import (
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PUBACK,
    PUBLISH,
    ack,
    fixed_header,
    parse_publish,
)

CONNACK_OK = b"\x20\x02\x00\x00"
LIMIT = 1 << 20


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
            lambda f: self.done(acks, f.exception() is None)
        )

    def commit(self, rows: list[tuple[str, str, float]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO records VALUES (?, ?, ?)", rows)
        self.db.execute("COMMIT")

    def done(self, acks: dict[asyncio.Transport, list[bytes]], committed: bool) -> None:
        """PUBACKs for a committed batch; for one that failed, none (its senders are dropped and
        send again)."""
        for transport, packets in acks.items():
            if not committed:
                transport.abort()
            elif not transport.is_closing():
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
        """Whole packets, framed by the broker's own :func:`gateway.broker.wire.fixed_header`."""
        buf = self.buf + data if self.buf else data
        pos = 0
        while (head := fixed_header(buf, pos, LIMIT)) is not None:
            start, length = head
            if len(buf) - start < length:
                break
            self.packet(buf[pos], buf[start : start + length])
            pos = start + length
        self.buf = buf[pos:]

    def packet(self, head: int, body: bytes) -> None:
        assert self.transport is not None
        kind = head >> 4
        if kind == CONNECT:
            self.transport.write(CONNACK_OK)
        elif kind == PUBLISH:
            p = parse_publish(head & 0x0F, body)
            if p.packet_id is not None:
                payload = p.payload.decode()
                json.loads(payload)
                self.journal.add(self.transport, (p.topic, payload, time.time()), ack(PUBACK, p.packet_id))
        elif kind == PINGREQ:
            self.transport.write(b"\xd0\x00")
        elif kind == DISCONNECT:
            self.transport.close()


async def main(port: int, folder: Path) -> None:
    journal = Journal(folder / "floor.sqlite")
    loop = asyncio.get_running_loop()
    await loop.create_server(lambda: Connection(journal), "127.0.0.1", port)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2])))
