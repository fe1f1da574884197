"""Figures for samples under a budget: a site day of 200 devices offering 10x the budget.

Run: ``python tests/bench/samples_day.py [--seeds 3] [--system-seconds 60]``

1. Simulated time through the pure core (:mod:`tests.core.samples.day`): a whole UTC day chosen
   every 60 s with an 8 MiB budget (about 18,000 offers of 1 to 8 KiB; about 30 s a seed), per seed: bytes sent against the budget, the share of errors and shadow
   disagreements among the samples offered and among those sent, the largest share of the bytes
   any one device got, and the rare class's share.
2. A shorter system run through the real gateway (in this process, its clock running a day in
   ``--system-seconds``, a 1 MiB budget; real HTTP offers from 200 devices, raw thumbnails and embeddings; real
   nginx with ``dav_methods PUT`` as the upload server; a real HTTP ingest for the index records):
   the same figures read from the upload server's files, and the uplink bytes per device-day
   (blobs plus their index records) beside the bytes the devices offered.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import aiohttp
from aiohttp import web

from gateway.core import settings as S
from gateway.core.samples.budget import DAY_S
from gateway.service import Gateway
from tests.core.samples.day import TOP, offers, simulate
from tests.gw import until
from tests.peers import IngestServer, free_port, ingest_batch
from tests.samples.upload_server import TOKEN, stored, upload_server

TOP_NAMES = {r.value for r in TOP}


def pure(seeds: int) -> None:
    print("== simulated day through the pure core (200 devices, 10x the budget, chosen every 60 s) ==")
    for seed in range(1000, 1000 + seeds):
        r = simulate(seed, devices=200, budget=8 << 20, offered_factor=10.0, interval_s=60.0)
        print(
            f"seed {seed}: offered {r.offered_bytes / r.budget:.2f}x the budget, sent {r.sent_bytes / r.budget:.4%} of it; "
            f"errors+disagreements {r.share(r.offered, TOP):.1%} of offered, {r.share(r.sent, TOP):.1%} of sent; "
            f"largest device {r.largest_device_share:.2%} of the bytes; "
            f"rare class {r.offered_classes['forklift'] / r.offered.total():.2%} offered, "
            f"{r.sent_classes['forklift'] / r.sent.total():.2%} sent"
        )


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


def body_of(c: Any, rng: random.Random) -> dict[str, Any]:
    doc: dict[str, Any] = {"reason": c.reason.value, "model_version": "1.0.0", "class": c.label,
                           "confidence": rng.random()}  # fmt: skip
    if rng.random() < 0.5:
        doc["embedding"] = [rng.uniform(-1, 1) for _ in range(c.size // 4)]
    else:
        doc["raw"], doc["content_type"] = base64.b64encode(rng.randbytes(c.size)).decode(), "image/jpeg"
    return doc


async def system(seconds: float, seed: int) -> None:
    print(
        f"== system run: a day in {seconds:.0f} s through the real gateway (200 devices, 10x the budget) =="
    )
    rng = random.Random(seed)
    budget = 1 << 20
    day = int(time.time() // DAY_S)
    speed = DAY_S / seconds
    plan = offers(rng, 200, 10 * budget, day)
    work = Path(tempfile.mkdtemp(prefix="samples-bench-"))
    (work / "registry").mkdir()
    ingest = Ingest(free_port())
    await ingest.start()
    with upload_server(work / "uploaded") as up:
        settings = S.Settings(
            site="bench", data_dir=str(work / "data"),
            http=S.HttpSettings(listen="127.0.0.1:0"), operator=S.OperatorSettings(listen="127.0.0.1:0"),
            mqtt=S.MqttSettings(listen="127.0.0.1:0"), discovery=S.DiscoverySettings(enabled=False),
            mirror=S.MirrorSettings(upstream=str(work / "registry"), retry_initial_s=0.05, retry_max_s=0.5),
            uplink=S.UplinkSettings(ingest_url=f"http://127.0.0.1:{ingest.port}/ingest", report_interval_s=0.5),
            samples=S.SamplesSettings(enabled=True, raw=True, budget_bytes_per_day=budget, choose_interval_s=0.05,
                                      upload_url=up.url + "/samples", upload_token=TOKEN),
        )  # fmt: skip
        began = time.monotonic()
        gw = Gateway.from_settings(settings, clock=lambda: day * DAY_S + (time.monotonic() - began) * speed)
        await gw.start()
        url = f"http://{gw.http_addresses[0][0]}:{gw.http_addresses[0][1]}"
        offered_http = 0
        answers: Counter[int] = Counter()
        sem = asyncio.Semaphore(32)
        try:
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
                    offered_http += len(text)
                    tasks.append(asyncio.create_task(post(c.device, text)))
                await asyncio.gather(*tasks)
            # past the day's end: the rest expires, what was chosen goes up
            await until(
                lambda: (
                    "dropped_budget" in gw.samples.status()["counts"]
                    and not gw.samples.status()["waiting_upload"]
                ),
                120,
                "the day's end and the last uploads",
            )
            await asyncio.sleep(2.0)  # the index records' last batch
            counts = gw.samples.status()["counts"]
        finally:
            await gw.stop()
        files = stored(work / "uploaded")
    await ingest.stop()
    sent = list(ingest.records.values())
    sent_bytes = sum(len(b) for b in files.values())
    index_bytes = sum(len(json.dumps(r, separators=(",", ":"))) for r in sent)
    device_bytes = Counter[str]()
    for r in sent:
        device_bytes[r["device_id"]] += r["bytes"]
    offered_top = sum(1 for c in plan if c.reason.value in TOP_NAMES) / len(plan)
    sent_top = sum(1 for r in sent if r["reason"] in TOP_NAMES) / max(1, len(sent))
    content = sum(c.size for c in plan)
    print(f"answers {dict(answers)}; kept {sum(counts.get('kept', {}).values())}, duplicates "
          f"{sum(counts.get('duplicate', {}).values())}, sent {len(sent)} (files on the server {len(files)})")  # fmt: skip
    print(f"bytes sent {sent_bytes} = {sent_bytes / budget:.4%} of the budget {budget}")
    print(f"errors+disagreements {offered_top:.1%} of offered, {sent_top:.1%} of sent; "
          f"largest device {max(device_bytes.values()) / max(1, sent_bytes):.2%} of the bytes")  # fmt: skip
    print(
        f"per device-day: uplink {(sent_bytes + index_bytes) / 200:,.0f} B (blobs {sent_bytes / 200:,.0f} + index "
        f"records {index_bytes / 200:,.0f} as JSON before gzip) beside {content / 200:,.0f} B of content offered "
        f"({offered_http / 200:,.0f} B as the devices' JSON bodies); ingest batches for everything: "
        f"{ingest.batch_bytes / 200:,.0f} B gzip"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--system-seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    pure(args.seeds)
    asyncio.run(system(args.system_seconds, args.seed))


if __name__ == "__main__":
    main()
