"""Taking samples: ``POST /devices/{id}/samples`` and MQTT ``devices/{id}/samples`` against a real
gateway (and a real broker), with hostile bodies, other devices' voices and a full disk."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.service.wiring import Gateway
from tests.broker.conftest import closed_by_peer, raw_connect_packet
from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running, until
from tests.peers import can_mount_tmpfs, fill, free_port, gateway_on_tmpfs, need, stop, wait_port

GOOD = {"reason": "error", "model_version": "1.0.0", "class": "person", "confidence": 0.3}
TOKENS = {"cam-a": "token-of-cam-a", "cam-b": "token-of-cam-b"}


def embedding(rng: random.Random, dims: int = 64) -> dict[str, Any]:
    return {**GOOD, "embedding": [rng.uniform(-1, 1) for _ in range(dims)]}


def kept(gw: Gateway) -> dict[str, int]:
    return gw.samples.status().get("counts", {}).get("kept", {})


async def post(
    http: aiohttp.ClientSession, gw: Gateway, device: str, body: Any, **kw: Any
) -> tuple[int, str]:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    async with http.post(f"{base_url(gw)}/devices/{device}/samples", data=data, **kw) as r:
        return r.status, await r.text()


async def test_a_sample_is_kept_once_and_a_repeat_is_a_duplicate(reg: Registry, tmp_path: Path) -> None:
    s = gateway_settings(reg, tmp_path / "data", samples={"enabled": True, "raw": True, "max_bytes": 4096})
    rng = random.Random(1)
    async with running(s) as gw, aiohttp.ClientSession() as http:
        body = embedding(rng)
        status, text = await post(http, gw, "cam-1", body)
        assert status == 200 and json.loads(text)["outcome"] == "new", text
        status, text = await post(http, gw, "cam-2", body)  # the same content from another device
        assert status == 200 and json.loads(text)["outcome"] == "duplicate"
        raw = {
            **GOOD,
            "reason": "random",
            "raw": base64.b64encode(os.urandom(4096)).decode(),
            "content_type": "image/jpeg",
        }
        status, text = await post(http, gw, "cam-1", raw)
        assert status == 200 and json.loads(text)["outcome"] == "new", text
        assert kept(gw) == {"error": 1, "random": 1}
        assert gw.samples.status()["counts"]["duplicate"] == {"error": 1}
        assert gw.samples.status()["kept_bytes"] == 64 * 4 + 4096


async def test_off_by_default_answers_404_with_the_reason(reg: Registry, tmp_path: Path) -> None:
    async with running(gateway_settings(reg, tmp_path / "data")) as gw, aiohttp.ClientSession() as http:
        status, text = await post(http, gw, "cam-1", embedding(random.Random(2)))
        assert status == 404 and "samples.enabled" in text


def hostile_bodies(rng: random.Random, max_bytes: int) -> list[tuple[Any, str]]:
    """(body, a word the refusal must contain)."""
    big = base64.b64encode(os.urandom(max_bytes + 1)).decode()
    return [
        (b"\xff\xfe not json", "JSON"),
        ("[" * 5000, "deeper"),
        ([1, 2, 3], "JSON object"),
        ({**GOOD, "reason": "because"}, "reason"),
        ({**GOOD, "confidence": 1.5, "embedding": [1.0]}, "confidence"),
        ({**GOOD, "confidence": True, "embedding": [1.0]}, "confidence"),
        ({**GOOD, "class": "a\nb", "embedding": [1.0]}, "class"),
        ({**GOOD, "class": "x" * 129, "embedding": [1.0]}, "class"),
        ({k: v for k, v in GOOD.items() if k != "model_version"} | {"embedding": [1.0]}, "model_version"),
        (GOOD, "exactly one"),
        ({**GOOD, "embedding": [1.0], "raw": "AAAA"}, "exactly one"),
        ({**GOOD, "embedding": []}, "embedding"),
        ({**GOOD, "embedding": [1.0] * 65}, "embedding"),
        ({**GOOD, "embedding": ["1.0"]}, "embedding"),
        ({**GOOD, "embedding": [1e300]}, "float32"),
        ({**GOOD, "embedding": [[1.0]]}, "embedding"),
        ({**GOOD, "raw": "not base64!"}, "base64"),
        ({**GOOD, "raw": big}, "bytes"),
        ({**GOOD, "raw": "AAAA", "content_type": "../../etc"}, "content_type"),
        ({**GOOD, "raw": "AAAA", "content_type": 7}, "content_type"),
        ({**GOOD, "embedding": [rng.random()], "model_version": {"$gt": ""}}, "model_version"),
    ]


@pytest.mark.parametrize("seed", [3, 4, 5])
async def test_hostile_bodies_and_other_voices_get_a_4xx_and_change_nothing(
    reg: Registry, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    (tmp_path / "tokens.json").write_text(json.dumps(TOKENS))
    s = gateway_settings(
        reg,
        tmp_path / "data",
        devices={"access": "token", "tokens_file": str(tmp_path / "tokens.json")},
        samples={"enabled": True, "raw": True, "max_bytes": 2048, "max_embedding_dims": 64},
        http={"listen": "127.0.0.1:0", "max_body_bytes": 64 << 10},
    )
    own = {"Authorization": f"Bearer {TOKENS['cam-a']}"}
    async with running(s) as gw, aiohttp.ClientSession() as http:
        cases = hostile_bodies(rng, 2048)
        rng.shuffle(cases)
        for body, word in cases:
            status, text = await post(http, gw, "cam-a", body, headers=own)
            assert status == 400 and word in text, (body if len(str(body)) < 200 else str(body)[:200], text)
        # too big for any body, with or without a Content-Length
        status, _ = await post(http, gw, "cam-a", b"{" + b" " * (70 << 10) + b"}", headers=own)
        assert status == 413
        # another device's token, no token, a wrong token, a bad id: refused before the body is read
        valid = embedding(rng)
        assert (await post(http, gw, "cam-a", valid, headers={"Authorization": f"Bearer {TOKENS['cam-b']}"}))[
            0
        ] == 403
        assert (await post(http, gw, "cam-a", valid))[0] == 401
        assert (await post(http, gw, "cam-a", valid, headers={"Authorization": "Bearer nope"}))[0] in (
            401,
            403,
        )
        assert (await post(http, gw, ".hidden", valid, headers=own))[0] == 400
        assert kept(gw) == {} and gw.samples.status()["kept_bytes"] == 0
        assert gw.samples.store.meta == {}
        status, text = await post(http, gw, "cam-a", valid, headers=own)  # and it still works
        assert status == 200, text
        assert kept(gw) == {"error": 1}


async def test_mqtt_samples_are_kept_and_a_bad_client_drops_alone(reg: Registry, tmp_path: Path) -> None:
    need("mosquitto_pub")
    s = gateway_settings(reg, tmp_path / "data", samples={"enabled": True})
    rng = random.Random(6)
    async with running(s) as gw:
        assert gw.broker is not None
        port = gw.broker.addresses["tcp"][1]
        # a client that sends a PUBLISH of bogus length is dropped; a hostile sample is refused
        bogus = await asyncio.to_thread(__import__("socket").create_connection, ("127.0.0.1", port), 10)
        try:
            bogus.sendall(raw_connect_packet("cam-9") + bytes((0x32, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F)))
            await closed_by_peer(bogus)
        finally:
            bogus.close()

        async def pub(device: str, topic: str, payload: str) -> int:
            proc = await asyncio.create_subprocess_exec(
                need("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(port), "-i", device, "-q", "1",
                "-t", topic, "-m", payload, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            return await asyncio.wait_for(proc.wait(), 20)

        assert (
            await pub(
                "cam-1", "devices/cam-1/samples", json.dumps({**GOOD, "reason": "nope", "embedding": [1]})
            )
            == 0
        )
        assert gw.stats["samples.invalid"] == 1  # counted, acknowledged, nothing kept
        assert await pub("cam-1", "devices/cam-1/samples", json.dumps(embedding(rng))) == 0
        assert kept(gw) == {"error": 1}  # acknowledged only once kept
        # another device's topic: the broker refuses the publish and closes that client
        await pub("cam-1", "devices/cam-2/samples", json.dumps(embedding(rng)))
        assert kept(gw) == {"error": 1}
        assert await pub("cam-2", "devices/cam-2/samples", json.dumps(embedding(rng))) == 0
        await until(lambda: kept(gw) == {"error": 2}, 10, "the second device's sample")


def post_sample(port: int, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/devices/cam-1/samples", data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.mark.skipif(
    not can_mount_tmpfs(), reason="needs unshare -rm (user and mount namespaces) to mount a tmpfs"
)
def test_a_full_disk_gets_503_with_retry_after_then_recovers(tmp_path: Path) -> None:
    port = free_port()
    # A 16 MB tmpfs (room for the SQLite WALs of the outbox and the sample store, up to 4 MB each),
    # filled: the sample store's SQLite meets a real ENOSPC.
    env = {"OTA_GATEWAY_SAMPLES__ENABLED": "true", "OTA_GATEWAY_SAMPLES__RAW": "true"}
    proc, filler = gateway_on_tmpfs(tmp_path, "16m", port, env)
    rng = random.Random(7)

    def sample() -> dict[str, Any]:
        return {**GOOD, "raw": base64.b64encode(rng.randbytes(40_000)).decode()}

    try:
        wait_port(port, 20)
        assert post_sample(port, sample())[0] == 200
        fill(filler)
        answers = []
        for _ in range(50):
            status, headers, body = post_sample(port, sample())
            answers.append(status)
            if status != 200:
                break
        assert status == 503, answers
        assert int(headers["Retry-After"]) > 0 and "retry later" in body
        assert 500 not in answers
        filler.unlink(missing_ok=True)
        assert post_sample(port, sample())[0] == 200  # space again: it recovers by itself
        assert proc.poll() is None
    finally:
        stop(proc)
