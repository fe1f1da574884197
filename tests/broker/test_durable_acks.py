"""Durable before PUBACK on the embedded broker, tried to break over random seeds.

A real broker on an ephemeral port whose ingest hook answers each message with a future the test
holds (the outbox commit, in the gateway). A raw client sends its CONNECT and a run of QoS 1
PUBLISH packets cut at random byte boundaries (so packets arrive split and many to a chunk); the
test resolves the futures in a random order. Whatever the order: no PUBACK before its message's
future has succeeded, PUBACKs in the order the PUBLISH packets came [MQTT-4.6.0-2], every one in
the end; a message the hook acknowledges at once (no future) waits behind the older ones; a failed
future closes that client, with no PUBACK for it or anything after it, and nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import replace
from typing import Any

from gateway.broker import Broker, wire
from tests.broker.conftest import BASE, check, raw_connect_packet, until

SEEDS = range(6)
MESSAGES = 80


def publish(device: str, packet_id: int) -> bytes:
    topic = f"devices/{device}/metrics".encode()
    body = len(topic).to_bytes(2, "big") + topic + packet_id.to_bytes(2, "big") + b'{"n": %d}' % packet_id
    return bytes((0x32,)) + wire.encode_remaining_length(len(body)) + body


class Hook:
    """The ingest hook: a future per message, except every ``immediate``-th (acknowledged now);
    with ``shared``, a message takes the one before's future at that chance (one commit for a run
    of messages, as the outbox's grouped appends give)."""

    def __init__(self, immediate: int, shared: float = 0.0, rng: random.Random | None = None) -> None:
        self.immediate = immediate
        self.shared = shared
        self.rng = rng or random.Random(0)
        self.held: dict[int, asyncio.Future[Any] | None] = {}  # by the payload's n (= packet id)
        self.last: asyncio.Future[Any] | None = None

    def __call__(self, device_id: str, topic: str, payload: bytes) -> asyncio.Future[Any] | None:
        n = int(payload.split(b":")[1].strip(b" }"))
        if n % self.immediate == 0:
            fut = None
        elif self.last is not None and not self.last.done() and self.rng.random() < self.shared:
            fut = self.last
        else:
            fut = self.last = asyncio.get_running_loop().create_future()
        self.held[n] = fut
        return fut

    def durable(self, n: int) -> bool:
        fut = self.held.get(n)
        return n in self.held and (fut is None or (fut.done() and fut.exception() is None))


async def start(hook: Hook) -> Broker:
    broker = Broker(replace(BASE, lab_mode=True), check, hook)
    await broker.start()
    return broker


async def send_in_random_cuts(writer: asyncio.StreamWriter, data: bytes, rng: random.Random) -> None:
    pos = 0
    while pos < len(data):
        cut = rng.choice((1, 2, 3, 7, 40, 200, 1000))
        writer.write(data[pos : pos + cut])
        pos += cut
        if rng.random() < 0.3:
            await writer.drain()
            await asyncio.sleep(0)


async def read_acks(reader: asyncio.StreamReader, buf: bytearray, wait_s: float) -> list[int]:
    """Packet ids of the PUBACKs that arrive within ``wait_s`` (nothing else is expected)."""
    try:
        buf += await asyncio.wait_for(reader.read(65536), wait_s)
    except TimeoutError:
        pass
    ids = []
    while len(buf) >= 4:
        assert buf[0] == wire.PUBACK << 4 and buf[1] == 2, bytes(buf[:4])
        ids.append(int.from_bytes(buf[2:4], "big"))
        del buf[:4]
    return ids


async def connected(port: int, device: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw_connect_packet(device))
    assert await asyncio.wait_for(reader.readexactly(4), 10) == b"\x20\x02\x00\x00"
    return reader, writer


async def test_no_puback_before_durable_and_in_order_whatever_the_order_of_commits() -> None:
    for seed in SEEDS:
        rng = random.Random(seed)
        shared = (0.0, 0.7)[seed % 2]  # the hook draws from its own generator: its calls' timing varies
        hook = Hook(immediate=rng.choice((5, 7, 11)), shared=shared, rng=random.Random(f"hook {seed}"))
        broker = await start(hook)
        try:
            reader, writer = await connected(broker.addresses["tcp"][1], "dev1")
            stream = b"".join(publish("dev1", n) for n in range(1, MESSAGES + 1))
            await send_in_random_cuts(writer, stream, rng)
            await until(lambda h=hook: len(h.held) == MESSAGES, what=f"seed {seed}: all messages taken")
            order = list({id(fut): n for n, fut in hook.held.items() if fut is not None}.values())
            rng.shuffle(order)
            acked: list[int] = []
            buf = bytearray()
            while order:
                for _ in range(rng.randint(1, 12)):
                    if order:
                        hook.held[order.pop()].set_result(None)  # type: ignore[union-attr]
                for n in await read_acks(reader, buf, 0.02):
                    # everything up to n durable, and nothing skipped or repeated
                    assert all(hook.durable(k) for k in range(1, n + 1)), f"seed {seed}: PUBACK {n} early"
                    assert n == (acked[-1] if acked else 0) + 1, f"seed {seed}: PUBACK {n} after {acked[-3:]}"
                    acked.append(n)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while len(acked) < MESSAGES and loop.time() < deadline:
                for n in await read_acks(reader, buf, 0.1):
                    assert n == (acked[-1] if acked else 0) + 1, f"seed {seed}"
                    acked.append(n)
            assert acked == list(range(1, MESSAGES + 1)), f"seed {seed}"
            writer.close()
        finally:
            await broker.stop()


async def test_a_failed_commit_closes_that_client_only_without_acknowledging_it() -> None:
    for seed in SEEDS:
        rng = random.Random(seed)
        hook = Hook(immediate=10**9)  # every message waits for its future
        broker = await start(hook)
        try:
            port = broker.addresses["tcp"][1]
            reader, writer = await connected(port, "dev1")
            await send_in_random_cuts(writer, b"".join(publish("dev1", n) for n in range(1, 31)), rng)
            await until(lambda h=hook: len(h.held) == 30, what=f"seed {seed}: all messages taken")
            failed = rng.randint(1, 30)
            for n in range(1, 31):
                fut = hook.held[n]
                assert fut is not None
                if n == failed:
                    fut.set_exception(OSError("disk full"))
                else:
                    fut.set_result(None)
            data = await asyncio.wait_for(reader.read(), 10)  # until the broker closes it
            acked = [int.from_bytes(data[i + 2 : i + 4], "big") for i in range(0, len(data), 4)]
            assert acked == list(range(1, failed)), f"seed {seed}: failed {failed}, acked {acked}"
            assert broker.stats()["hook_errors"] == 1
            # the broker, and another client of it, carry on
            hook.immediate = 1
            reader2, writer2 = await connected(port, "dev2")
            writer2.write(publish("dev2", 7))
            assert await asyncio.wait_for(reader2.readexactly(4), 10) == b"\x40\x02\x00\x07"
            writer2.close()
            writer.close()
        finally:
            await broker.stop()


async def test_an_idle_connection_holds_no_task() -> None:
    """Idle connections cost their protocol, transport and session, not a task each."""
    broker = await start(Hook(immediate=1))
    writers = []
    try:
        before = len(asyncio.all_tasks())
        for i in range(100):
            _reader, writer = await connected(broker.addresses["tcp"][1], f"idle{i}")
            writers.append(writer)
        assert broker.stats()["connections"] == 100
        assert len(asyncio.all_tasks()) - before < 5
    finally:
        for writer in writers:
            writer.close()
        await broker.stop()


def subscribe(packet_id: int, topic_filter: str) -> bytes:
    raw = topic_filter.encode()
    body = packet_id.to_bytes(2, "big") + len(raw).to_bytes(2, "big") + raw + b"\x01"
    return bytes((0x82, len(body))) + body


async def test_a_message_not_acknowledged_is_sent_again_with_dup_on_resume_and_not_after_its_puback() -> None:
    broker = await start(Hook(immediate=1))
    try:
        port = broker.addresses["tcp"][1]
        for seed in SEEDS:
            rng = random.Random(seed)
            client = f"dev{seed}"
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw_connect_packet(client, clean=False))
            assert (await asyncio.wait_for(reader.readexactly(4), 10))[3] == 0
            writer.write(subscribe(1, f"devices/{client}/updates"))
            assert await asyncio.wait_for(reader.readexactly(5), 10) == b"\x90\x03\x00\x01\x01"
            payloads = [b"update %d" % rng.randrange(10**6) for _ in range(rng.randint(1, 5))]
            for payload in payloads:
                await broker.publish(f"devices/{client}/updates", payload)
            first = await read_publishes(reader, len(payloads))
            assert [(p, dup) for _, p, dup in first] == [(p, False) for p in payloads]
            acked = rng.randint(0, len(payloads))  # the oldest ones acknowledged, the rest not
            for packet_id, _, _ in first[:acked]:
                writer.write(wire.ack(wire.PUBACK, packet_id))
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
            await until(lambda c=client: not broker.connected(c), what="the first connection gone")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw_connect_packet(client, clean=False))
            assert await asyncio.wait_for(reader.readexactly(4), 10) == b"\x20\x02\x01\x00"  # session present
            again = await read_publishes(reader, len(payloads) - acked)
            assert again == [(i, p, True) for i, p, _ in first[acked:]], f"seed {seed}"
            for packet_id, _, _ in again:
                writer.write(wire.ack(wire.PUBACK, packet_id))
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
            await until(lambda c=client: not broker.connected(c), what="the second connection gone")
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw_connect_packet(client, clean=False))
            assert await asyncio.wait_for(reader.readexactly(4), 10) == b"\x20\x02\x01\x00"
            with contextlib.suppress(TimeoutError):
                extra = await asyncio.wait_for(reader.read(100), 0.3)
                assert extra == b"", f"seed {seed}: sent again after its PUBACK: {extra!r}"
            writer.close()
    finally:
        await broker.stop()


async def read_publishes(reader: asyncio.StreamReader, count: int) -> list[tuple[int, bytes, bool]]:
    """(packet id, payload, DUP) of ``count`` QoS 1 PUBLISH packets."""
    out = []
    for _ in range(count):
        first, length = await asyncio.wait_for(reader.readexactly(2), 10)
        assert first & 0xF6 == 0x32 and length < 128, (first, length)
        body = await reader.readexactly(length)
        topic_len = int.from_bytes(body[:2], "big")
        packet_id = int.from_bytes(body[2 + topic_len : 4 + topic_len], "big")
        out.append((packet_id, body[4 + topic_len :], bool(first & 0x08)))
    return out
