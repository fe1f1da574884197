"""Figures for the canary gates: the article's stories through the real pure gate, simulated.

Run: ``python tests/bench/gate_stories.py [--devices 200] [--runs 100]``

For each bad story: devices that ever ran the bad model before the halt (goal: no more than the first
wave), windows from the first window the candidate ran in to the halt, devices rolled back. For the
network story: whether it finished, and the largest admission in one step. For the good model: false
halts in ``--runs`` seeded runs (goal: at most 1).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.rollout.sim import run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--runs", type=int, default=100)
    args = ap.parse_args()
    print(
        f"site of {args.devices} devices, waves 1/5/10/25/50/100 %, 2 devices minimum per wave, soak 300 s, 60 s windows"
    )
    print(
        f"{'story':18} {'outcome':8} {'1st wave':>8} {'ran bad':>8} {'windows to halt':>16} {'rolled back':>12}"
    )
    for story in ("cpu_spike", "missing_class", "runtime_errors"):
        rs = [run(story, seed=s, devices=args.devices) for s in range(10)]
        worst = max(rs, key=lambda r: (r.ever_ran_candidate, r.windows_to_halt or 0))
        print(
            f"{story:18} {worst.stage:8} {worst.first_wave_size:>8} {worst.ever_ran_candidate:>8} "
            f"{worst.windows_to_halt!s:>16} {worst.rolled_back:>12}   (worst of 10 seeds; halted in "
            f"{sum(r.stage == 'halted' for r in rs)}/10)"
        )
    net = [run("network_timeouts", seed=s, devices=args.devices) for s in range(10)]
    print(
        f"{'network_timeouts':18} done {sum(r.stage == 'done' for r in net)}/10; largest admission in one step "
        f"{max(r.max_admitted_in_one_step for r in net)} of {args.devices} (the 50->100 % wave)"
    )
    t0 = time.perf_counter()
    good = [run("good", seed=s, devices=args.devices) for s in range(args.runs)]
    halts = sum(r.stage != "done" for r in good)
    print(
        f"{'good (noise)':18} reached 100 % in {args.runs - halts}/{args.runs} seeded runs; false halts: {halts} "
        f"({time.perf_counter() - t0:.1f} s of CPU for {args.runs} simulated rollouts)"
    )


if __name__ == "__main__":
    main()
