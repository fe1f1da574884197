"""Bodies that used to become 500s: deeply nested JSON (HTTP and MQTT) and metrics on a full disk."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core import jsondoc
from gateway.core.errors import FormatError
from gateway.service.wiring import Gateway
from tests.conftest import Registry
from tests.gw import base_url, gateway_settings, running
from tests.peers import can_mount_tmpfs, fill, free_port, gateway_on_tmpfs, need, stop, wait_port

METRICS = {"model_version": "1.0.0", "model_id": "detector", "avg_latency_ms": 4.0, "num_inferences": 10}
DEEP = "[" * 100_000


# -- the depth check -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "deepest"),
    [
        ("{}", 1),
        ('{"a": [1, {"b": []}]}', 4),
        ('{"a": "[[[[[[[[["}', 1),  # brackets inside strings do not count
        ('{"a": "\\"[[[[", "b": "\\\\"}', 1),  # nor after escaped quotes and backslashes
        ('["\\\\", [[]]]', 3),
        ("[" * 50 + "]" * 50, 50),
        ("[[[", 3),  # malformed: a number, the parser says what is wrong
        ("", 0),
    ],
)
def test_depth(text: str, deepest: int) -> None:
    assert jsondoc.depth(text.encode()) == deepest


def test_loads_refuses_deep_documents_without_recursion() -> None:
    for doc in (DEEP, "{" + '"a":{' * 100_000, "[" * 33 + "]" * 33):
        with pytest.raises(FormatError, match="deeper than 32"):
            jsondoc.loads(doc)
    assert jsondoc.loads("[" * 32 + "]" * 32) is not None
    assert jsondoc.loads('{"s": "' + "[" * 1000 + '"}') == {"s": "[" * 1000}
    with pytest.raises(FormatError, match="not JSON"):
        jsondoc.loads(b"\xff{")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab,:'),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\ab'), inner, max_size=3)
    ),
    max_leaves=30,
)


def nesting(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((nesting(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((nesting(v) for v in value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
def test_depth_agrees_with_the_structure(value: object) -> None:
    assert jsondoc.depth(json.dumps(value).encode()) == nesting(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(alphabet='[]{}"\\ 1,:').map(str.encode))
def test_loads_raises_only_format_errors(data: bytes) -> None:
    try:
        jsondoc.loads(data, max_depth=4)
    except FormatError:
        pass


# -- HTTP and MQTT on a real gateway -------------------------------------------------------------------


@pytest.fixture
async def gw(reg: Registry, tmp_path: Path) -> AsyncIterator[Gateway]:
    async with running(gateway_settings(reg, tmp_path / "data")) as g:
        yield g


@pytest.mark.parametrize("path", ["metrics", "events"])
async def test_deeply_nested_json_over_http_is_400(gw: Gateway, path: str) -> None:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            f"{base_url(gw)}/devices/cam-1/{path}", data=DEEP, headers={"Content-Type": "application/json"}
        ) as r,
    ):
        assert r.status == 400 and "deeper" in await r.text()
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{base_url(gw)}/devices/cam-1/metrics", json=METRICS) as r,
    ):
        assert r.status == 200  # the server is fine


@pytest.mark.parametrize("kind", ["metrics", "events"])
async def test_deeply_nested_json_over_mqtt_is_dropped_counted_and_acknowledged(
    gw: Gateway, kind: str
) -> None:
    assert gw.broker is not None
    port = gw.broker.addresses["tcp"][1]
    cmd = [
        need("mosquitto_pub"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-i",
        "cam-1",
        "-q",
        "1",
        "-t",
        f"devices/cam-1/{kind}",
        "-m",
        "[" * 8000,
    ]  # fmt: skip  (within the size caps, past the recursion limit)
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err  # mosquitto_pub -q 1 exits 0 only after the PUBACK
    counter = "telemetry.invalid" if kind == "metrics" else "telemetry.invalid_events"
    assert gw.stats[counter] == 1 and "deeper" in gw.stats.last_error[counter]
    assert gw.broker.stats()["accepted"] >= 1


# -- metrics on a full disk: a real tmpfs, filled up under a running ``ota-gateway serve`` -------------


def post_metrics(port: int) -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/devices/cam-1/metrics",
        data=json.dumps(METRICS).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


@pytest.mark.skipif(
    not can_mount_tmpfs(), reason="needs unshare -rm (user and mount namespaces) to mount a tmpfs"
)
def test_metrics_on_a_full_disk_get_503_with_retry_after_then_recover(tmp_path: Path) -> None:
    port = free_port()
    # A 2 MB tmpfs, filled: sqlite meets a real ENOSPC.
    proc, filler = gateway_on_tmpfs(tmp_path, "2m", port)
    try:
        wait_port(port, 20)
        assert post_metrics(port)[0] == 200
        fill(filler)
        answers = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, headers, body = post_metrics(port)
            answers.append(status)
            if status != 200:
                break
        assert status == 503, answers
        assert int(headers["Retry-After"]) > 0 and "retry later" in body
        assert 500 not in answers
        filler.unlink()
        assert post_metrics(port)[0] == 200  # space again: it recovers by itself
        assert proc.poll() is None
    finally:
        stop(proc)
