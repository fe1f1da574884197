"""The TLS listener with mosquitto_pub: a client certificate's CN is the device; tokens work too."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.broker.conftest import Running, run, until
from tests.pki import site_pki

pytestmark = pytest.mark.peer


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    site_pki(tmp_path, clients=["dev1"])
    return tmp_path


async def test_mtls_certificate_cn_is_the_device(
    start_broker: Callable[..., Awaitable[Running]], pki: Path
) -> None:
    r = await start_broker(
        tls_listen="127.0.0.1:0",
        tls_cert=str(pki / "server.pem"),
        tls_key=str(pki / "server.key"),
        client_ca=str(pki / "ca.pem"),
    )
    port = str(r.broker.addresses["tls"][1])
    tls = ["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "--cafile", str(pki / "ca.pem"), "-q", "1"]
    cert = ["--cert", str(pki / "dev1.pem"), "--key", str(pki / "dev1.key")]
    rc, out = await run(*tls, *cert, "-t", "devices/dev1/metrics", "-m", "by cert")
    assert rc == 0, out
    rc, out = await run(*tls, "-u", "dev2", "-P", "tok2", "-t", "devices/dev2/metrics", "-m", "by token")
    assert rc == 0, out
    rc, out = await run(*tls, *cert, "-u", "dev2", "-P", "tok2", "-t", "devices/dev2/metrics", "-m", "mixed")
    assert rc != 0  # a user name that disagrees with the certificate is refused
    rc, out = await run(*tls, *cert, "-t", "devices/dev2/metrics", "-m", "spoof")
    assert r.received == [
        ("dev1", "devices/dev1/metrics", b"by cert"),
        ("dev2", "devices/dev2/metrics", b"by token"),
    ]
    assert r.broker.stats()["publish_refused"] == 1


async def test_sockets_that_never_start_tls_do_not_lock_a_device_out(
    start_broker: Callable[..., Awaitable[Running]], pki: Path
) -> None:
    # 300 sockets that never send a ClientHello, held open; the handshake timeout is far away, so
    # only the pending cap (handshakes included, the oldest dropped) can let the device in.
    r = await start_broker(
        tls_listen="127.0.0.1:0",
        tls_cert=str(pki / "server.pem"),
        tls_key=str(pki / "server.key"),
        client_ca=str(pki / "ca.pem"),
        max_pending_connections=20,
        connect_timeout_s=60.0,
    )
    port = r.broker.addresses["tls"][1]

    def open_all() -> list[socket.socket]:
        return [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]

    silent = await asyncio.to_thread(open_all)
    try:
        await until(lambda: r.broker.stats()["pending_dropped"] >= 300 - 20, what="handshakes dropped")
        rc, out = await run(
            "mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "--cafile", str(pki / "ca.pem"),
            "--cert", str(pki / "dev1.pem"), "--key", str(pki / "dev1.key"), "-q", "1",
            "-t", "devices/dev1/metrics", "-m", "in",
        )  # fmt: skip
        assert rc == 0, out
        assert ("dev1", "devices/dev1/metrics", b"in") in r.received
    finally:
        for s in silent:
            s.close()
