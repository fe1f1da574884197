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
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.core.samples.day import TOP, simulate
from tests.samples.site_day import site_day


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


async def system(seconds: float, seed: int) -> None:
    print(
        f"== system run: a day in {seconds:.0f} s through the real gateway (200 devices, 10x the budget) =="
    )
    d = await site_day(Path(tempfile.mkdtemp(prefix="samples-bench-")), seconds=seconds, seed=seed)
    kept = sum(d.counts.get("kept", {}).values())
    print(f"answers {dict(d.answers)}; kept {kept}, sent {d.sent} (files on the server {d.files})")
    print(f"bytes sent {d.sent_bytes} = {d.sent_bytes / d.budget:.4%} of the budget {d.budget}")
    print(f"errors+disagreements {d.offered_top_share:.1%} of offered, {d.sent_top_share:.1%} of sent; "
          f"largest device {d.largest_device_share:.2%} of the bytes")  # fmt: skip
    n = d.devices
    print(
        f"per device-day: uplink {(d.sent_bytes + d.index_bytes) / n:,.0f} B (blobs {d.sent_bytes / n:,.0f} + index "
        f"records {d.index_bytes / n:,.0f} as JSON before gzip) beside {d.offered_content_bytes / n:,.0f} B of "
        f"content offered ({d.offered_http_bytes / n:,.0f} B as the devices' JSON bodies); ingest batches for "
        f"everything: {d.ingest_bytes / n:,.0f} B gzip"
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
