"""Nothing lost, nothing stored twice: samples across a ``kill -9`` of the gateway while the upload
server is down (real ``ota-gateway serve`` processes, real nginx with ``dav_methods PUT``, a real
HTTP ingest for the index records), checked on the upload server's files, over several seeds with
a random kill instant and a random instant for the server to come up."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.peers import (
    IngestServer,
    Nginx,
    free_port,
    gateway_process,
    ingest_batch,
    nginx,
    serve_args,
    stop,
    wait_port,
)
from tests.samples.upload_server import TOKEN, dav_server_block, puts, stored

pytestmark = pytest.mark.slow  # a long system story: SLOW_TESTS=1 runs it (a .ci/run step)


class Ingest(IngestServer):
    """The cloud's ingest: keeps each ``training_sample`` record once per (site, seq)."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.by_seq: dict[int, dict[str, Any]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        doc = await ingest_batch(request)
        for r in doc["records"]:
            if r["kind"] == "training_sample":
                self.by_seq[r["seq"]] = r["body"]
        return web.Response(status=204)

    def shas(self) -> Counter[str]:
        return Counter(body["sha256"] for body in self.by_seq.values())


def offer(port: int, device: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """POST a sample; its answer, or None when the gateway died before answering."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/devices/{device}/samples", data=json.dumps(body).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            answer: dict[str, Any] = json.loads(r.read())
            return answer
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def sample(rng: random.Random) -> dict[str, Any]:
    reason = rng.choice(["error", "shadow_disagreement", "low_confidence", "user_corrected", "random"])
    return {"reason": reason, "model_version": "1.0.0", "class": rng.choice(["person", "car"]),
            "confidence": rng.random(), "embedding": [rng.uniform(-1, 1) for _ in range(128)]}  # fmt: skip


def gateway(tmp_path: Path, http_port: int, upload_port: int, ingest_port: int) -> subprocess.Popen[bytes]:
    (tmp_path / "registry").mkdir(exist_ok=True)
    env = {
        "OTA_GATEWAY_SAMPLES__ENABLED": "true",
        "OTA_GATEWAY_SAMPLES__UPLOAD_URL": f"http://127.0.0.1:{upload_port}/samples",
        "OTA_GATEWAY_SAMPLES__UPLOAD_TOKEN": TOKEN,
        "OTA_GATEWAY_SAMPLES__CHOOSE_INTERVAL_S": "0.1",
        "OTA_GATEWAY_SAMPLES__BUDGET_BYTES_PER_DAY": str(1 << 40),  # all of them go: this is about loss
        "OTA_GATEWAY_UPLINK__INGEST_URL": f"http://127.0.0.1:{ingest_port}/ingest",
        "OTA_GATEWAY_UPLINK__REPORT_INTERVAL_S": "0.2",
        "OTA_GATEWAY_MIRROR__RETRY_INITIAL_S": "0.05",
        "OTA_GATEWAY_MIRROR__RETRY_MAX_S": "0.3",
    }
    args = serve_args(tmp_path / "data", str(tmp_path / "registry"), http_port)
    return gateway_process(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize(
    ("seed", "server_up_before_kill"), [(31, False), (32, False), (33, False), (34, True), (35, True)]
)
async def test_samples_survive_a_kill_9_with_the_upload_server_down(
    tmp_path: Path, seed: int, server_up_before_kill: bool
) -> None:
    """Down: the upload server comes up only after the kill. Up: it comes up at a random instant
    before the kill, so the kill lands among uploads (PUTs, index records, marks) in flight."""
    rng = random.Random(seed)
    http_port, upload_port, ingest = free_port(), free_port(), Ingest(free_port())
    await ingest.start()
    root = tmp_path / "uploaded"
    root.mkdir()
    accepted: set[str] = set()
    offered: set[str] = set()
    stop_offering = threading.Event()

    def devices(port: int) -> None:  # devices offer until the gateway dies (and after, unanswered)
        while not stop_offering.is_set():
            answer = offer(port, f"cam-{rng.randrange(8)}", body := sample(rng))
            offered.add(json.dumps(body))
            if answer is not None:
                accepted.add(answer["sha256"])

    proc = gateway(tmp_path, http_port, upload_port, ingest.port)
    try:
        await asyncio.to_thread(wait_port, http_port, 20)
        kill_after = rng.uniform(0.3, 2.0)
        server_after = rng.uniform(0.0, kill_after) if server_up_before_kill else kill_after + 1
        worker = threading.Thread(target=devices, args=(http_port,))
        worker.start()
        started = time.monotonic()
        servers = ExitStack()
        up: Nginx | None = None
        try:
            if server_after < kill_after:
                await asyncio.sleep(server_after)  # random instants are the test's schedule
                up = servers.enter_context(nginx(server=dav_server_block(root), port=upload_port))
            await asyncio.sleep(max(0.0, kill_after - (time.monotonic() - started)))
            proc.kill()  # kill -9, mid-offer, mid-upload
            proc.wait()
            stop_offering.set()
            worker.join()
            if up is None:
                up = servers.enter_context(nginx(server=dav_server_block(root), port=upload_port))
            assert accepted, "no sample was accepted before the kill"
            proc = gateway(tmp_path, http_port, upload_port, ingest.port)  # the same data folder
            deadline = time.monotonic() + 60
            while not accepted <= set(stored(root)) or not accepted <= set(ingest.shas()):
                assert time.monotonic() < deadline, (len(accepted), len(stored(root)), len(ingest.shas()))
                await asyncio.sleep(0.1)  # polling the upload server's files with a deadline
            await asyncio.sleep(1.0)  # anything still to come would be a repeat: give it time to show
            files = stored(root)  # each file checked against its name
            index = ingest.shas()
            assert accepted <= set(files) and set(index) == set(
                files
            )  # nothing lost, no record without its blob
            assert max(index.values()) == 1, [s for s, n in index.items() if n > 1]  # no index record twice
            repeats = len(puts(up)) - len(files)
            print(
                f"seed {seed} (upload server up before the kill: {server_up_before_kill}): "
                f"{len(accepted)} accepted, {len(files)} on the server, {repeats} PUTs repeated"
            )
        finally:
            stop_offering.set()
            servers.close()
    finally:
        stop(proc)
        await ingest.stop()
