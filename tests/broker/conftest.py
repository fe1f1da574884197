"""A real embedded broker on an ephemeral loopback port, with a token table and a recording hook."""

from __future__ import annotations

import asyncio
import shutil
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from gateway.broker import Broker
from gateway.core.settings import MqttSettings

TOKENS = {"dev1": "tok1", "dev2": "tok2", "dev3": "tok3"}


def check(device_id: str, password: str | None, cert_cn: str | None) -> bool:
    """The lead plugs in the HTTP API's device credentials; this twin is a dict of tokens."""
    if cert_cn is not None:
        return cert_cn == device_id
    return password is not None and TOKENS.get(device_id) == password


@dataclass
class Running:
    broker: Broker
    received: list[tuple[str, str, bytes]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.broker.addresses["tcp"][1]


async def until(condition: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll a condition with a deadline (no sleeps as synchronisation)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


BASE = MqttSettings(listen="127.0.0.1:0", connect_timeout_s=2.0)


@pytest.fixture
async def start_broker() -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    started: list[Broker] = []

    async def start(**overrides: Any) -> Running:
        running = Running(broker=None)  # type: ignore[arg-type]
        broker = Broker(replace(BASE, **overrides), check, lambda d, t, p: running.received.append((d, t, p)))
        running.broker = broker
        await broker.start()
        started.append(broker)
        return running

    yield start
    for broker in started:
        await broker.stop()


@pytest.fixture
async def running(start_broker: Callable[..., Awaitable[Running]]) -> Running:
    return await start_broker()


def need(program: str) -> None:
    if shutil.which(program) is None:
        pytest.fail(f"{program} is not installed (Debian package mosquitto-clients; see .ci/run)")


async def run(*argv: str, timeout_s: float = 15.0) -> tuple[int, str]:
    """Run a real client program; returns (exit code, stdout + stderr)."""
    need(argv[0])
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")


def raw_connect_packet(
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    keep_alive: int = 60,
    *,
    clean: bool = True,
) -> bytes:
    """An MQTT 3.1.1 CONNECT built by hand, for raw-socket tests."""

    def s(text: str) -> bytes:
        raw = text.encode()
        return len(raw).to_bytes(2, "big") + raw

    flags = (
        (0x02 if clean else 0) | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    )
    body = s("MQTT") + bytes((4, flags)) + keep_alive.to_bytes(2, "big") + s(client_id)
    if username is not None:
        body += s(username)
    if password is not None:
        body += s(password)
    return bytes((0x10, len(body))) + body


@pytest.fixture
def raw_socket() -> Any:
    """Plain TCP sockets to the broker, closed at teardown whatever the test did."""
    made: list[socket.socket] = []

    async def connect(port: int) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        made.append(sock)
        return sock

    yield connect
    for sock in made:
        sock.close()


async def closed_by_peer(sock: socket.socket, timeout_s: float = 10.0) -> bytes:
    """Read until the broker closes the socket; returns what it sent first (e.g. a CONNACK)."""

    def read_all() -> bytes:
        sock.settimeout(timeout_s)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data

    return await asyncio.to_thread(read_all)
