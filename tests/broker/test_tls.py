"""The TLS listener with mosquitto_pub: a client certificate's CN is the device; tokens work too."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.broker.conftest import Running, run, until

pytestmark = pytest.mark.peer


def _issue(
    path: Path,
    cn: str,
    issuer_key: ec.EllipticCurvePrivateKey | None,
    issuer: x509.Name | None,
    ca: bool = False,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Name]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return key, name


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    ca_key, ca_name = _issue(tmp_path / "ca", "site CA", None, None, ca=True)
    _issue(tmp_path / "server", "gateway", ca_key, ca_name)
    _issue(tmp_path / "dev1", "dev1", ca_key, ca_name)
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
