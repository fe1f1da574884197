"""Gateway tiers: a child gateway whose upstream is a parent gateway, with credentials.

* End to end with two real ``ota-gateway serve`` processes, nginx from Debian as the cloud and a
  device at the child: the parent (site ``plant``) holds the child site's index
  (``mirror.child_sites``) and serves it with the artifact; the artifact crosses the cloud's link
  exactly once for both tiers (nginx's access log); the device's download verifies against the
  cloud's key (the parent never re-signs); the parent lists the child as a device of kind
  ``gateway``.
* A parent with token access refuses a child without credentials and serves one with them
  (``mirror.token``), and one with a client certificate (``mirror.client_cert``) when it is mTLS.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running, until
from tests.peers import free_port, gateway_process, nginx, serve_args, stop, wait_port
from tests.pki import site_pki

MODEL = os.urandom(3_000_000)
SHA = hashlib.sha256(MODEL).hexdigest()
TOKEN = "parent-site-token"
CHILD_SECRET = "the-child-gateways-own-secret"
PARENT, CHILD = "plant", "line-1"
FAST = {
    "OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.3",
    "OTA_GATEWAY_MIRROR__RETRY_INITIAL_S": "0.1",
    "OTA_GATEWAY_MIRROR__RETRY_MAX_S": "0.5",
    "OTA_GATEWAY_GATES__FIRST_VERSION": '"open"',
}


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError:
        return 0, b""


def wait_for(cond: object, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling a condition with a deadline


@contextmanager
def gateway(
    tmp: Path, name: str, upstream: str, site: str, key: Path, **env: str
) -> Iterator[tuple[int, int]]:
    """A real gateway process; yields its (device port, operator port)."""
    port = free_port()
    args = serve_args(tmp / name, upstream, port, site=site, trusted_key=key)
    operator = int(args[args.index("--operator") + 1].rsplit(":", 1)[1])
    proc = gateway_process(
        args, env={**FAST, **env}, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_port(port, 30)
        yield port, operator
    finally:
        stop(proc)


def test_two_gateway_processes_one_upstream_fetch_and_an_end_to_end_signature(
    reg: Registry, tmp_path: Path
) -> None:
    reg.publish(MODEL, site=PARENT)
    reg.publish(MODEL, site=CHILD)  # the same model for both sites: one sha256, one transfer
    cloud_key = serialization.load_pem_public_key(reg.public_key.read_bytes())
    assert isinstance(cloud_key, ec.EllipticCurvePublicKey)
    with nginx(reg.root) as cloud:
        parent_env = {
            "OTA_GATEWAY_MIRROR__CHILD_SITES": f'["{CHILD}"]',
            "OTA_GATEWAY_MIRROR__CHILD_TOKENS": f'["{CHILD}={CHILD_SECRET}"]',
            "OTA_GATEWAY_DEVICES__ACCESS": '"token"',
            "OTA_GATEWAY_DEVICES__SITE_TOKEN": f'"{TOKEN}"',
        }
        with gateway(tmp_path, "parent", cloud.url, PARENT, reg.public_key, **parent_env) as (pport, pop):
            child_env = {"OTA_GATEWAY_MIRROR__TOKEN": f'"{CHILD_SECRET}"'}
            parent_url = f"http://127.0.0.1:{pport}/"
            with gateway(tmp_path, "child", parent_url, CHILD, reg.public_key, **child_env) as (cport, _):
                poll = f"http://127.0.0.1:{cport}/devices/cam-7/updates?fw=1.0.0"
                wait_for(lambda: get(poll)[0] == 200, "the child offers the model to its device")
                manifest = json.loads(get(poll)[1])
                art_url, sig_url = manifest["artifact_url"], manifest["signature_url"]
                assert art_url.startswith(f"http://127.0.0.1:{cport}/")  # served by the child itself
                wait_for(lambda: get(art_url)[0] == 200, "the child has the artifact verified")
                _, data = get(art_url)
                _, sig = get(sig_url)
                assert hashlib.sha256(data).hexdigest() == SHA == manifest["sha256"]
                cloud_key.verify(sig, data, ec.ECDSA(hashes.SHA256()))  # the cloud's own signature
                # The child's site index is the cloud's bytes, passed on untouched.
                served = get(f"{parent_url}sites/{CHILD}/index.json", {"Authorization": f"Bearer {TOKEN}"})[1]
                assert served == (reg.root / "sites" / CHILD / "index.json").read_bytes()
                inventory = json.loads(get(f"http://127.0.0.1:{pop}/devices")[1])
                text = json.dumps(inventory)
                assert f"gateway.{CHILD}" in text and '"kind": "gateway"' in text, text[:500]
        fetches = [line for line in cloud.access_log() if "detector-1.0.0.bin " in line]
        print(f"\ncloud fetches of the artifact for both tiers: {len(fetches)}: {fetches}")
        assert len(fetches) == 1, fetches


async def test_a_parent_with_token_access_refuses_a_child_without_credentials(
    reg: Registry, tmp_path: Path
) -> None:
    reg.publish(MODEL, site=PARENT)
    reg.publish(MODEL, site=CHILD)
    parent = gateway_settings(
        reg,
        tmp_path / "parent",
        devices={"access": "token", "site_token": TOKEN},
        mirror={"upstream": str(reg.root), "child_sites": (CHILD,), "poll_interval_s": 0.2,
                "child_tokens": (f"{CHILD}={CHILD_SECRET}",)},
    )  # fmt: skip
    parent = dataclasses.replace(parent, site=PARENT)
    async with running(parent) as p:
        await until(lambda: p.store.is_verified(SHA), what="parent mirrored")
        url = base_url(p) + "/"
        plain = gateway_settings(reg, tmp_path / "plain", upstream=url)
        plain = dataclasses.replace(plain, site=CHILD)
        async with running(plain) as c:
            await until(lambda: c.mirror.last_error and "401" in c.mirror.last_error, what="a refusal")
            assert c.mirror.index is None
        assert p.stats["downloads.refused_401"] >= 1
        with_token = gateway_settings(reg, tmp_path / "with-token", upstream=url, mirror={
            "upstream": url, "token": TOKEN, "poll_interval_s": 0.2})  # fmt: skip
        with_token = dataclasses.replace(with_token, site=CHILD)
        async with running(with_token) as c:  # a device token reads, but does not announce a child
            await until(lambda: c.store.is_verified(SHA), what="the child mirrored through the parent")
            assert c.mirror.index is not None and c.mirror.index.site == CHILD
        assert f"gateway.{CHILD}" not in p.inventory.devices
        own = gateway_settings(reg, tmp_path / "own", upstream=url, mirror={
            "upstream": url, "token": CHILD_SECRET, "poll_interval_s": 0.2})  # fmt: skip
        async with running(dataclasses.replace(own, site=CHILD)) as c:
            await until(lambda: c.store.is_verified(SHA), what="the child mirrored with its own secret")
        assert p.inventory.devices[f"gateway.{CHILD}"].attrs["kind"] == "gateway"


async def test_a_parent_with_mtls_serves_a_child_with_a_client_certificate(
    reg: Registry, tmp_path: Path
) -> None:
    reg.publish(MODEL, site=PARENT)
    reg.publish(MODEL, site=CHILD)
    pki = site_pki(tmp_path / "pki", clients=[f"gateway.{CHILD}"], hosts=["127.0.0.1"])
    parent = gateway_settings(
        reg,
        tmp_path / "parent",
        http={"listen": "127.0.0.1:0", "tls_cert": str(pki.server.cert), "tls_key": str(pki.server.key),
              "client_ca": str(pki.ca.cert)},
        devices={"access": "mtls"},
        mirror={"upstream": str(reg.root), "child_sites": (CHILD,), "poll_interval_s": 0.2},
    )  # fmt: skip
    async with running(dataclasses.replace(parent, site=PARENT)) as p:
        await until(lambda: p.store.is_verified(SHA), what="parent mirrored")
        host, port = p.http_addresses[0][:2]
        url = f"https://{host}:{port}/"
        client = pki.clients[f"gateway.{CHILD}"]
        child = gateway_settings(reg, tmp_path / "child", mirror={
            "upstream": url, "ca_bundle": str(pki.ca.cert), "client_cert": str(client.cert),
            "client_key": str(client.key), "poll_interval_s": 0.2})  # fmt: skip
        async with running(dataclasses.replace(child, site=CHILD)) as c:
            await until(lambda: c.store.is_verified(SHA), what="the child mirrored over mTLS")
        assert p.inventory.devices[f"gateway.{CHILD}"].attrs["kind"] == "gateway"
