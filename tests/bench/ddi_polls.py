"""Benchmark: the DDI base poll beside the native poll, on one gateway process, in one run.

Run: ``python tests/bench/ddi_polls.py [--devices 10000] [--seconds 5] [--rounds 3]``

``wrk`` (64 connections, random device ids among ``--devices``) against the native
``/devices/<id>/updates?hw=rev2`` and against the DDI ``/DEFAULT/controller/v1/<id>`` of the same
gateway (open access, a model published for ``hw:rev2``, gates open for the first version), taking
turns for ``--rounds`` rounds after a warm-up in which every device polled both ways. Prints
requests/s of each and the median ratio DDI/native. Both answer from memory (the same poll
answer); DDI renders its small JSON document per request, the native poll a cached body. No
figure is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway import registry  # noqa: E402
from tests.bench.common import bench_work, gateway, wrk  # noqa: E402

WRK_LUA = """
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "%s" .. math.random(1, %d) .. "%s")
end
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=10_000)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    work = bench_work("ddi-bench-")
    model = work.root / "model.bin"
    model.write_bytes(os.urandom(1 << 20))
    registry.publish(work.registry, model, work.private_key, model_id="detector", version="1.0.0",
                     site="bench", cohort="hw:rev2")  # fmt: skip
    native = work.root / "native.lua"
    native.write_text(WRK_LUA % ("/devices/dev-", args.devices, "/updates?hw=rev2"))
    ddi = work.root / "ddi.lua"
    ddi.write_text(WRK_LUA % ("/DEFAULT/controller/v1/dev-", args.devices, ""))
    env = {"OTA_GATEWAY_DDI__ENABLED": "true", "OTA_GATEWAY_GATES__FIRST_VERSION": "open"}
    with gateway(work, str(work.registry), env) as (base, _proc):
        wrk(base + "/", seconds=max(2, args.seconds), lua=native)  # warm-up: every device known
        wrk(base + "/", seconds=max(2, args.seconds), lua=ddi)
        ratios = []
        for i in range(args.rounds):
            n = wrk(base + "/", seconds=args.seconds, lua=native).rps
            d = wrk(base + "/", seconds=args.seconds, lua=ddi).rps
            ratios.append(d / n)
            print(
                f"round {i + 1}: native poll {n:,.0f} req/s, DDI base poll {d:,.0f} req/s, DDI/native {d / n:.2f}"
            )
        print(
            f"median DDI/native: {statistics.median(ratios):.2f} ({args.devices} devices, wrk 64 connections)"
        )


if __name__ == "__main__":
    main()
