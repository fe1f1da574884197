"""Benchmark: one admission pass over a site's devices, with the eligibility memo and without it.

Run: ``python tests/bench/eligibility_pass.py [--devices 20000] [--rounds 3]``. A wave with room is
filled by a pass of :func:`gateway.core.reach.eligible_for` over every device, again after each
change of the site (about once a second at 20,000 devices while the first wave waits for levels:
README, "A site of 20,000 devices"). In process, no I/O: two deployments (the baseline and the
candidate), devices of two hardware kinds on one firmware. Each round, in this order (the memo's
second pass needs its first; each round builds its devices and memo afresh):

- "without": the pass as it was, ``decide()`` for every device (the peer);
- "memo, first": the first pass with the memo (each device decided once and kept);
- "memo, again": the next pass, after 2 % of the records were replaced with the same facts (what
  a metrics message or a poll does to ``last_seen`` between two passes).

Prints milliseconds per pass (median of the rounds) and the ratio to "without".
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.core import reach  # noqa: E402
from gateway.core.device import DeviceRecord  # noqa: E402
from gateway.core.eligibility import decide  # noqa: E402
from gateway.core.eligibility_memo import EligibilityMemo  # noqa: E402
from gateway.core.manifest import Deployment, parse_deployment  # noqa: E402

NOW = 1_790_000_000.0
T = TypeVar("T")


def deployment(version: str) -> Deployment:
    return parse_deployment({"model_id": "detector", "version": version, "sha256": "a" * 64, "length": 10,
                             "artifact_url": f"artifacts/detector/{version}/m.bin",
                             "signature_url": f"artifacts/detector/{version}/m.bin.sig"})  # fmt: skip


def without(d: Deployment, deployments: list[Deployment], devices: list[DeviceRecord]) -> set[str]:
    """The pass before the memo: ``decide()`` for every device."""
    return {
        r.device_id
        for r in devices
        if r.model_version == d.version or decide(deployments, r, NOW, None).deployment == d
    }


def timed(fn: Callable[..., T], *args: Any) -> tuple[float, T]:
    t0 = time.perf_counter()
    out = fn(*args)
    return (time.perf_counter() - t0) * 1000, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rng = random.Random(1)
    deployments = [deployment("1.0.0"), deployment("2.0.0")]
    candidate = deployments[1]
    ms: dict[str, list[float]] = {"without": [], "memo, first": [], "memo, again": []}
    for _ in range(args.rounds):
        devices = [
            DeviceRecord(f"dev-{i:05d}", {"hw": rng.choice(["rev1", "rev2"]), "fw": "1.2.0"},
                         model_id="detector", model_version="1.0.0")
            for i in range(args.devices)
        ]  # fmt: skip
        took, want = timed(without, candidate, deployments, devices)
        ms["without"].append(took)
        reach.MEMO = EligibilityMemo()  # a fresh memo each round: its first pass decides every device
        took, first = timed(reach.eligible_for, candidate, deployments, devices, NOW, None)
        ms["memo, first"].append(took)
        for k in rng.sample(range(len(devices)), len(devices) // 50):
            devices[k] = dataclasses.replace(devices[k], last_seen=devices[k].last_seen + 1)
        took, again = timed(reach.eligible_for, candidate, deployments, devices, NOW, None)
        ms["memo, again"].append(took)
        assert set(first) == set(again) == want
    base = statistics.median(ms["without"])
    print(f"a pass over {args.devices} devices, median of {args.rounds} rounds:")
    for name, xs in ms.items():
        each = ", ".join(f"{x:.1f}" for x in xs)
        print(
            f"  {name:12s} {statistics.median(xs):7.1f} ms  ({statistics.median(xs) / base:.2f}x without; rounds {each})"
        )


if __name__ == "__main__":
    main()
