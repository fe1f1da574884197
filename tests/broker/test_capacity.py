"""Broker capacity is for devices: silent or failing sockets cannot lock them out, and one device
cannot pile up persistent sessions."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.broker.conftest import Running, closed_by_peer, raw_connect_packet, run, until

CONNACK_OK = bytes((0x20, 2, 0, 0))


async def _silent(port: int, n: int) -> list[socket.socket]:
    def open_all() -> list[socket.socket]:
        return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]

    return await asyncio.to_thread(open_all)


@pytest.mark.parametrize("seed", range(4))
async def test_silent_and_failing_sockets_do_not_lock_a_device_out(
    start_broker: Callable[..., Awaitable[Running]], raw_socket: Any, seed: int
) -> None:
    # Room for 100 devices; hundreds of sockets that never send CONNECT, some that send a wrong
    # one, and some that send half a CONNECT, in a random order, all held open; the CONNECT timeout
    # is far away, so only the pending cap (the oldest pending dropped) can let the device in.
    rng = random.Random(seed)
    cap = rng.randint(8, 64)
    kinds = (
        ["silent"] * rng.randint(100, 500) + ["wrong"] * rng.randint(0, 60) + ["half"] * rng.randint(0, 60)
    )
    rng.shuffle(kinds)
    r = await start_broker(max_connections=100, max_pending_connections=cap, connect_timeout_s=60.0)
    wrong = raw_connect_packet("x", "dev2", "wrong")
    half = raw_connect_packet("y", "dev3", "tok3")[:9]

    def flood() -> list[socket.socket]:
        made = []
        for kind in kinds:
            s = socket.create_connection(("127.0.0.1", r.port), timeout=10)
            made.append(s)
            if kind != "silent":
                s.sendall(wrong if kind == "wrong" else half)
        return made

    held = await asyncio.to_thread(flood)
    try:
        await until(
            lambda: r.broker.stats()["pending_dropped"] + r.broker.stats()["refused"] >= len(kinds) - cap,
            what="the flood taken in",
        )
        assert r.broker.stats()["pending"] <= cap
        rc, out = await run(
            "mosquitto_pub", "-p", str(r.port), "-u", "dev1", "-P", "tok1", "-q", "1",
            "-t", "devices/dev1/metrics", "-m", "{}",
        )  # fmt: skip
        assert rc == 0, (seed, out)
        assert r.received == [("dev1", "devices/dev1/metrics", b"{}")]
    finally:
        for s in held:
            s.close()
    await until(lambda: r.broker.stats()["pending"] == 0, what="the flood gone")


async def test_authenticated_clients_fill_max_connections_not_the_pending_ones(
    start_broker: Callable[..., Awaitable[Running]], raw_socket: Any
) -> None:
    r = await start_broker(max_connections=3, max_pending_connections=5, connect_timeout_s=60.0)
    silent = await _silent(r.port, 20)
    try:
        devices = [await raw_socket(r.port) for _ in range(3)]
        for i, s in enumerate(devices):
            s.sendall(raw_connect_packet(f"c{i}", f"dev{i + 1}", f"tok{i + 1}"))
            assert await asyncio.to_thread(s.recv, 4) == CONNACK_OK
        assert r.broker.stats()["connections"] == 3
    finally:
        for s in silent:
            s.close()


async def _persistent(raw_socket: Any, port: int, client_id: str) -> tuple[socket.socket, bytes]:
    s = await raw_socket(port)
    s.sendall(raw_connect_packet(client_id, "dev1", "tok1", clean=False))
    return s, await asyncio.to_thread(s.recv, 4)


async def test_persistent_sessions_per_device_are_capped_the_longest_offline_dropped(
    start_broker: Callable[..., Awaitable[Running]], raw_socket: Any
) -> None:
    r = await start_broker(max_sessions_per_device=4)
    for i in range(200):
        s, connack = await _persistent(raw_socket, r.port, f"id-{i}")
        assert connack == CONNACK_OK
        s.close()  # no DISCONNECT: the session stays, offline
        await until(lambda: r.broker.stats()["connections"] == 0, what="offline")
    assert r.broker.stats()["sessions"] == 4
    assert r.broker.stats()["sessions_dropped"] == 196
    # the newest four are kept (session present = 1), an old one was dropped (session present = 0)
    s, connack = await _persistent(raw_socket, r.port, "id-199")
    assert connack == bytes((0x20, 2, 1, 0))
    s.close()
    await until(lambda: r.broker.stats()["connections"] == 0, what="offline")
    s, connack = await _persistent(raw_socket, r.port, "id-0")
    assert connack == CONNACK_OK
    s.close()
    await until(lambda: r.broker.stats()["connections"] == 0, what="offline")
    assert r.broker.stats()["sessions"] == 4
    # a resumed session counts as recently used: the next new one drops id-198, not id-197
    for client_id, present in (("id-197", 1), ("id-x", 0), ("id-197", 1), ("id-198", 0)):
        s, connack = await _persistent(raw_socket, r.port, client_id)
        assert connack == bytes((0x20, 2, present, 0)), client_id
        s.close()
        await until(lambda: r.broker.stats()["connections"] == 0, what="offline")
    assert r.broker.stats()["sessions"] == 4


async def test_a_new_persistent_session_is_refused_when_all_of_the_devices_are_connected(
    start_broker: Callable[..., Awaitable[Running]], raw_socket: Any
) -> None:
    r = await start_broker(max_sessions_per_device=2)
    live = [await _persistent(raw_socket, r.port, f"id-{i}") for i in range(2)]
    assert [c for _, c in live] == [CONNACK_OK, CONNACK_OK]
    s = await raw_socket(r.port)
    s.sendall(raw_connect_packet("id-2", "dev1", "tok1", clean=False))
    assert await closed_by_peer(s) == bytes((0x20, 2, 0, 2))  # identifier rejected
    assert r.broker.stats()["sessions_refused"] == 1
    # a clean session is not a persistent one: still allowed
    c = await raw_socket(r.port)
    c.sendall(raw_connect_packet("id-3", "dev1", "tok1"))
    assert await asyncio.to_thread(c.recv, 4) == CONNACK_OK
    # another device is not affected
    rc, out = await run(
        "mosquitto_pub", "-p", str(r.port), "-u", "dev2", "-P", "tok2", "-i", "x", "-c", "-q", "1",
        "-t", "devices/dev2/metrics", "-m", "{}",
    )  # fmt: skip
    assert rc == 0, out
