"""A site day of samples through the real gateway, its clock running a UTC day in ``seconds``:
200 devices (as :mod:`tests.core.samples.day` draws them) offer raw thumbnails and embeddings over
real HTTP at their instants; nginx with ``dav_methods PUT`` is the upload server and a real HTTP
ingest takes the index records. Shared by ``tests/samples/test_site_day.py`` and
``tests/bench/samples_day.py``."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from gateway.core import settings as S
from gateway.core.samples.budget import DAY_S, Candidate
from gateway.service.wiring import Gateway
from tests.core.samples.day import TOP, offers
from tests.gw import until
from tests.peers import IngestServer, free_port, ingest_batch
from tests.samples.upload_server import TOKEN, stored, upload_server

TOP_NAMES = {r.value for r in TOP}


class Ingest(IngestServer):
    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.records: dict[int, dict[str, Any]] = {}
        self.batch_bytes = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.batch_bytes += request.content_length or 0
        doc = await ingest_batch(request)
        for r in doc["records"]:
            if r["kind"] == "training_sample":
                self.records[r["seq"]] = r["body"]
        return web.Response(status=204)


@dataclass
class SiteDay:
    budget: int
    devices: int
    answers: Counter[int]
    offered: int  # samples
    offered_content_bytes: int
    offered_http_bytes: int  # the devices' JSON bodies
    offered_top_share: float
    sent: int  # index records
    files: int  # blobs on the upload server
    sent_bytes: int  # blob bytes on the upload server
    index_bytes: int  # the index records as compact JSON (before the uplink's gzip)
    ingest_bytes: int  # every uplink batch, gzip
    sent_top_share: float
    largest_device_share: float
    counts: dict[str, dict[str, int]]


def body_of(c: Candidate, rng: random.Random) -> dict[str, Any]:
    doc: dict[str, Any] = {"reason": c.reason.value, "model_version": "1.0.0", "class": c.label,
                           "confidence": rng.random()}  # fmt: skip
    if rng.random() < 0.5:
        doc["embedding"] = [rng.uniform(-1, 1) for _ in range(c.size // 4)]
    else:
        doc["raw"], doc["content_type"] = base64.b64encode(rng.randbytes(c.size)).decode(), "image/jpeg"
    return doc


async def offer_all(
    url: str, plan: list[Candidate], rng: random.Random, day: int, speed: float, began: float
) -> tuple[Counter[int], int]:
    answers: Counter[int] = Counter()
    sent_bytes = 0
    sem = asyncio.Semaphore(32)
    async with aiohttp.ClientSession() as http:

        async def post(device: str, text: str) -> None:
            async with sem, http.post(f"{url}/devices/{device}/samples", data=text) as r:
                answers[r.status] += 1

        tasks = []
        for c in plan:
            wait = (c.offered_at - day * DAY_S) / speed - (time.monotonic() - began)
            if wait > 0:
                await asyncio.sleep(wait)  # the offer's instant in the run's schedule
            text = json.dumps(body_of(c, rng))
            sent_bytes += len(text)
            tasks.append(asyncio.create_task(post(c.device, text)))
        await asyncio.gather(*tasks)
    return answers, sent_bytes


async def site_day(
    work: Path, *, seconds: float, seed: int, devices: int = 200, budget: int = 1 << 20
) -> SiteDay:
    rng = random.Random(seed)
    day = int(time.time() // DAY_S)
    speed = DAY_S / seconds
    plan = offers(rng, devices, 10 * budget, day)
    (work / "registry").mkdir(parents=True, exist_ok=True)
    ingest = Ingest(free_port())
    await ingest.start()
    try:
        with upload_server(work / "uploaded") as up:
            settings = S.Settings(
                site="day", data_dir=str(work / "data"),
                http=S.HttpSettings(listen="127.0.0.1:0"), operator=S.OperatorSettings(listen="127.0.0.1:0"),
                mqtt=S.MqttSettings(listen="127.0.0.1:0"), discovery=S.DiscoverySettings(enabled=False),
                mirror=S.MirrorSettings(upstream=str(work / "registry"), retry_initial_s=0.05, retry_max_s=0.5),
                uplink=S.UplinkSettings(ingest_url=f"http://127.0.0.1:{ingest.port}/ingest", report_interval_s=0.5),
                samples=S.SamplesSettings(enabled=True, raw=True, budget_bytes_per_day=budget, choose_interval_s=0.05,
                                          upload_url=up.url + "/samples", upload_token=TOKEN),
            )  # fmt: skip
            began = time.monotonic()
            gw = Gateway.from_settings(
                settings, clock=lambda: day * DAY_S + (time.monotonic() - began) * speed
            )
            await gw.start()
            try:
                url = f"http://{gw.http_addresses[0][0]}:{gw.http_addresses[0][1]}"
                answers, offered_http = await offer_all(url, plan, rng, day, speed, began)
                await until(  # past the day's end: the rest expires, what was chosen goes up
                    lambda: "dropped_budget" in gw.samples.status()["counts"] and not gw.samples.status()["waiting_upload"],
                    seconds + 60,
                    "the day's end and the last uploads",
                )  # fmt: skip
                sent_shas = {s for s in stored(work / "uploaded")}
                await until(
                    lambda: {r["sha256"] for r in ingest.records.values()} >= sent_shas, 30, "index records"
                )
                counts = gw.samples.status()["counts"]
            finally:
                await gw.stop()
            files = stored(work / "uploaded")
    finally:
        await ingest.stop()
    sent = list(ingest.records.values())
    device_bytes: Counter[str] = Counter()
    for r in sent:
        device_bytes[r["device_id"]] += r["bytes"]
    sent_bytes = sum(len(b) for b in files.values())
    return SiteDay(
        budget=budget,
        devices=devices,
        answers=answers,
        offered=len(plan),
        offered_content_bytes=sum(c.size for c in plan),
        offered_http_bytes=offered_http,
        offered_top_share=sum(1 for c in plan if c.reason.value in TOP_NAMES) / len(plan),
        sent=len(sent),
        files=len(files),
        sent_bytes=sent_bytes,
        index_bytes=sum(len(json.dumps(r, separators=(",", ":"))) for r in sent),
        ingest_bytes=ingest.batch_bytes,
        sent_top_share=sum(1 for r in sent if r["reason"] in TOP_NAMES) / max(1, len(sent)),
        largest_device_share=max(device_bytes.values()) / max(1, sent_bytes),
        counts=counts,
    )
