"""``/metrics`` on a real gateway after real traffic, parsed with prometheus_client's own parser.

The traffic: a mirror whose first transfer stalls (a transport failure, then a resumed transfer), a
download while it is still mirroring (503), polls, a ranged download, metrics over HTTP and over
MQTT (mosquitto_pub) with a refused login, and an outbox small enough to drop records. Every family
the issue names must be there with values that agree with what was done. The operator token guards
``/metrics`` like the rest of the operator API.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running, until
from tests.mirror.hostile import Fault, Hostile
from tests.peers import ROOT, need

MODEL = os.urandom(300_000)
SHA = hashlib.sha256(MODEL).hexdigest()
TOKEN = "operator-token-for-the-scrape"
DEVICE_TOKENS = {"cam-1": "token-of-cam-1", "cam-2": "token-of-cam-2"}
AUTH = {"Authorization": f"Bearer {DEVICE_TOKENS['cam-1']}"}
METRICS = {"model_id": "detector", "model_version": "1.0.0", "num_inferences": 10, "num_errors": 0,
           "avg_latency_ms": 12.0, "cpu_percent": 20.0, "ram_percent": 30.0}  # fmt: skip
Families = dict[str, dict[tuple[tuple[str, str], ...], float]]


def operator_url(gw: Gateway) -> str:
    host, port = gw.operator_addresses[0][:2]
    return f"http://{host}:{port}"


async def scrape(gw: Gateway, token: str | None = TOKEN) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as s, s.get(operator_url(gw) + "/metrics", headers=headers) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.text()


def families(text: str) -> Families:
    """name (as the family is typed: counters without ``_total``) -> label set -> value."""
    out: Families = {}
    for fam in text_string_to_metric_families(text):
        samples = out.setdefault(fam.name, {})
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue
            samples[tuple(sorted(s.labels.items()))] = s.value
    return out


EXTERNAL_ONLY = "ota_gateway_mqtt_external_"  # families exposed in mqtt.mode = "external" only


def dashboard_names() -> set[str]:
    """The metric names the Grafana dashboard in deploy/ queries."""
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for panel in dashboard["panels"] for t in panel["targets"])
    return set(re.findall(r"ota_gateway_[a-z_]+", exprs))


def exposed_names(text: str) -> set[str]:
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def one(fams: Families, name: str, **labels: str) -> float:
    return fams[name][tuple(sorted(labels.items()))]


async def mosquitto_pub(gw: Gateway, user: str, password: str, payload: str) -> int:
    assert gw.broker is not None
    cmd = [need("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(gw.broker.addresses["tcp"][1]), "-i", user,
           "-u", user, "-P", password, "-q", "1", "-t", f"devices/{user}/metrics", "-m", payload]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await asyncio.wait_for(proc.wait(), 20)
    return proc.returncode or 0


@pytest.fixture
async def gw(reg: Registry, hostile: Hostile, tmp_path: Path) -> AsyncIterator[Gateway]:
    manifest = reg.publish(MODEL, chunk_size=0)  # no chunk list: a device asking while it mirrors gets 503
    hostile.faults[manifest["artifact_url"]] = Fault(stall_after=100_000, times=1)
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps(DEVICE_TOKENS))
    settings = gateway_settings(
        reg,
        tmp_path / "data",
        upstream=hostile.url,
        operator={"listen": "127.0.0.1:0", "token": TOKEN},
        devices={"access": "token", "tokens_file": str(tokens)},
        mirror={
            "upstream": hostile.url,
            "poll_interval_s": 0.2,
            "retry_initial_s": 0.05,
            "retry_max_s": 0.2,
            "read_timeout_s": 1.0,
        },
        uplink={"outbox_max_bytes": 600},  # a few samples fit: the rest are dropped, oldest first
    )
    async with running(settings) as g:
        yield g


async def test_metrics_need_the_operator_token(gw: Gateway) -> None:
    assert (await scrape(gw, token=None))[0] == 401
    assert (await scrape(gw, token="wrong"))[0] == 401
    status, content_type, text = await scrape(gw)
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    assert "ota_gateway_info" in families(text)


async def test_every_family_is_there_with_sane_values_after_traffic(gw: Gateway) -> None:
    artifact = f"{base_url(gw)}/artifacts/detector/1.0.0/detector-1.0.0.bin"
    await until(lambda: gw.mirror.index is not None, what="the index accepted")
    async with aiohttp.ClientSession(headers=AUTH) as s:
        assert not gw.store.is_verified(SHA)  # the first transfer stalls until read_timeout_s
        async with s.get(artifact) as r:
            assert r.status == 503  # still mirroring
        await until(lambda: gw.store.is_verified(SHA), 20, "mirrored after the stall")
        for query in ("?fw=1.0.0&hw=rev2", "?fw=1.0.0&hw=rev2&model_id=detector&model_version=1.0.0"):
            async with s.get(f"{base_url(gw)}/devices/cam-1/updates{query}") as r:
                await r.read()
        async with s.get(artifact, headers={"Range": "bytes=0-999"}) as r:
            assert r.status == 206 and len(await r.read()) == 1000
        for _ in range(8):
            async with s.post(f"{base_url(gw)}/devices/cam-1/metrics", json=METRICS) as r:
                assert r.status == 200
    async with aiohttp.ClientSession(headers=AUTH) as s, s.get(artifact) as r:  # a fresh connection
        assert r.status == 200 and await r.read() == MODEL  # the short path's (download_fast)
    assert await mosquitto_pub(gw, "cam-2", DEVICE_TOKENS["cam-2"], json.dumps(METRICS)) == 0
    assert await mosquitto_pub(gw, "cam-2", "not-the-token", json.dumps(METRICS)) != 0

    status, _, text = await scrape(gw)
    assert status == 200
    f = families(text)
    # the index and the clock
    assert one(f, "ota_gateway_index_version") == gw.mirror.index.version >= 1
    assert 0 < one(f, "ota_gateway_index_expiry_seconds") <= 400 * 86400
    assert one(f, "ota_gateway_clock_trusted") == 1
    assert one(f, "ota_gateway_ready") == 1
    # mirror: bytes, progress, failures
    assert one(f, "ota_gateway_mirror_bytes") >= len(MODEL)
    assert one(f, "ota_gateway_mirror_progress_ratio", deployment="detector@1.0.0") == 1.0
    assert one(f, "ota_gateway_mirror_artifact_size_bytes", deployment="detector@1.0.0") == len(MODEL)
    assert one(f, "ota_gateway_mirror_failures", kind="transport") >= 1  # the stall timed out
    assert one(f, "ota_gateway_mirror_artifacts_verified") == 1
    # store
    assert one(f, "ota_gateway_store_used_bytes") == len(MODEL)
    assert one(f, "ota_gateway_store_blobs") == 1
    assert one(f, "ota_gateway_store_evictions") == 0
    # polls by answer and reason; downloads
    polls = f["ota_gateway_polls"]
    assert sum(polls.values()) == 2
    assert all(dict(k)["answer"] in ("200", "204", "304") and dict(k)["reason"] for k in polls)
    assert one(f, "ota_gateway_download_bytes") >= 1000
    assert one(f, "ota_gateway_download_unavailable") == 1
    assert one(f, "ota_gateway_download_fast") >= 1
    # broker: a connection came and went, one message in, one refusal for the wrong password
    assert one(f, "ota_gateway_mqtt_messages", direction="received") == 1
    assert one(f, "ota_gateway_mqtt_refusals", reason="credentials") == 1
    assert one(f, "ota_gateway_mqtt_accepted") >= 1
    assert one(f, "ota_gateway_mqtt_connections") >= 0
    # outbox: what waits, its age, what the small bound dropped
    assert 1 <= one(f, "ota_gateway_outbox_records") <= 9
    assert 0 < one(f, "ota_gateway_outbox_bytes") <= 600
    assert 0 <= one(f, "ota_gateway_outbox_oldest_age_seconds") < 60
    assert sum(f["ota_gateway_outbox_drops"].values()) >= 1
    assert one(f, "ota_gateway_outbox_drops", kind="sample", reason="over max_bytes") >= 1
    # gates: the first version is gated; exactly one stage per deployment
    stages = {dict(k)["stage"]: v for k, v in f["ota_gateway_gate_stage"].items()}
    assert sum(stages.values()) == 1 and stages["waves"] == 1
    assert one(f, "ota_gateway_gate_admissions", deployment="detector@1.0.0") >= 0
    assert one(f, "ota_gateway_gate_halts", deployment="detector@1.0.0") == 0
    assert one(f, "ota_gateway_gate_wave", deployment="detector@1.0.0") >= 0
    # the supervised tasks: each named, none restarted or failing after a calm run
    assert one(f, "ota_gateway_task_restarts", task="mirror-poll") == 0
    assert one(f, "ota_gateway_task_failing", task="site-loop") == 0
    # the Grafana dashboard in deploy/ uses only names this exposition has (those of external
    # mode: tests/broker/test_external.py)
    used = {n for n in dashboard_names() if not n.startswith(EXTERNAL_ONLY)}
    assert used and used <= exposed_names(text), used - exposed_names(text)


async def test_the_figures_stay_out_of_the_global_registry(gw: Gateway) -> None:
    """A registry per gateway: nothing goes through prometheus_client's global REGISTRY."""
    from prometheus_client import REGISTRY

    assert not any(m.name.startswith("ota_gateway") for m in REGISTRY.collect())
    assert gw.metrics.registry is not REGISTRY
