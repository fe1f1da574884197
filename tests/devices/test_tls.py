"""The device API over HTTPS with the site's certificate, and devices identified by client certificates."""

from __future__ import annotations

import hashlib
import os
import ssl
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import Registry
from tests.gw import gateway_settings, running, until
from tests.pki import site_pki

MODEL = os.urandom(30_000)
SHA = hashlib.sha256(MODEL).hexdigest()


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, tuple[str, str]]:
    site = site_pki(tmp_path, clients=["cam-1"], hosts=["127.0.0.1"])
    return {"ca": site.ca.pair, "server": site.server.pair, "cam-1": site.clients["cam-1"].pair}


def client_ctx(ca: str, cert: tuple[str, str] | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(*cert)
    return ctx


async def test_mtls_identifies_devices_by_certificate(
    reg: Registry, tmp_path: Path, pki: dict[str, tuple[str, str]]
) -> None:
    reg.publish(MODEL)
    settings = gateway_settings(
        reg,
        tmp_path / "data",
        http={"tls_cert": pki["server"][0], "tls_key": pki["server"][1], "client_ca": pki["ca"][0]},
        devices={"access": "mtls"},
    )
    async with running(settings) as gw:
        await until(lambda: gw.store.is_verified(SHA), what="mirrored")
        host, port = gw.http_addresses[0][:2]
        base = f"https://{host}:{port}"
        artifact = f"{base}/artifacts/detector/1.0.0/detector-1.0.0.bin"
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ctx(pki["ca"][0], pki["cam-1"]))
        ) as s:
            async with s.get(artifact) as r:
                assert r.status == 200
                assert await r.read() == MODEL
            async with s.get(f"{base}/devices/cam-2/updates") as r:
                assert r.status == 403
                assert "certificate is for 'cam-1'" in await r.text()
        # No client certificate: the TLS handshake itself is refused (CERT_REQUIRED in mtls mode).
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ctx(pki["ca"][0], None))
        ) as s:
            with pytest.raises((aiohttp.ClientError, ssl.SSLError)):
                async with s.get(artifact) as r:
                    await r.read()


async def test_mqtt_over_tls_identifies_devices_by_certificate(
    reg: Registry, tmp_path: Path, pki: dict[str, tuple[str, str]]
) -> None:
    import asyncio
    import json

    import paho.mqtt.client as paho

    settings = gateway_settings(
        reg,
        tmp_path / "data",
        http={"tls_cert": pki["server"][0], "tls_key": pki["server"][1], "client_ca": pki["ca"][0]},
        devices={"access": "mtls"},
        mqtt={"tls_listen": "127.0.0.1:0"},
    )
    async with running(settings) as gw:
        assert gw.broker is not None
        tls_port = gw.broker.addresses["tls"][1]
        loop = asyncio.get_running_loop()
        result: asyncio.Future[int] = loop.create_future()

        def attempt(user: str) -> paho.Client:
            c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=user)
            c.tls_set(ca_certs=pki["ca"][0], certfile=pki["cam-1"][0], keyfile=pki["cam-1"][1])
            c.username_pw_set(user)
            return c

        ok = attempt("cam-1")
        ok.on_connect = lambda _c, _u, _f, rc, _p: loop.call_soon_threadsafe(result.set_result, int(rc.value))
        await asyncio.to_thread(ok.connect, "127.0.0.1", tls_port)  # the TLS handshake blocks
        ok.loop_start()
        try:
            assert await asyncio.wait_for(result, 15) == 0
            body = {"model_id": "detector", "model_version": "1.0.0", "num_inferences": 5}
            sent = ok.publish("devices/cam-1/metrics", json.dumps(body), qos=1)
            # paho's blocking calls go to a thread: the broker they wait for runs on this loop.
            await asyncio.to_thread(sent.wait_for_publish, 10)
            await until(lambda: gw.stats["telemetry.samples"] == 1, what="a metrics sample over TLS")
        finally:
            await asyncio.to_thread(ok.disconnect)
            await asyncio.to_thread(ok.loop_stop)
        # The same certificate cannot claim another device's name.
        refused: asyncio.Future[int] = loop.create_future()
        other = attempt("cam-2")
        other.on_connect = lambda _c, _u, _f, rc, _p: loop.call_soon_threadsafe(
            refused.set_result, int(rc.value)
        )
        await asyncio.to_thread(other.connect, "127.0.0.1", tls_port)
        other.loop_start()
        try:
            assert await asyncio.wait_for(refused, 15) != 0
        finally:
            await asyncio.to_thread(other.disconnect)
            await asyncio.to_thread(other.loop_stop)
