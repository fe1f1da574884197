"""Figures for the canary gates: the stories through the real decisions, a whole site simulated.

Run: ``python tests/bench/gate_stories.py [--devices 200] [--seeds 20] [--runs 100]``

Every story runs with devices that poll at random instants (half of them holding long polls) and an
index and artifact that land at random instants (:mod:`tests.rollout.sim`). For each bad story:
devices ever offered the bad candidate (worst of ``--seeds``; goal: never above the first wave's
admission), windows from its first metrics (or, for a crash, its first offer) to the halt, devices
rolled back. For the network story: whether it finished, and the largest admission in one step. For
the good model: false halts in ``--runs`` seeded rollouts (goal: 0). And ``--schedules`` random
schedules with restarts, holds, pauses and aborts, checked for leaks on every answer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.rollout.sim import run
from tests.rollout.test_no_leak import schedule

BAD = ("cpu_spike", "missing_class", "runtime_errors", "first_version_crash")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--schedules", type=int, default=1000)
    args = ap.parse_args()
    print(
        f"site of {args.devices} devices polling every 15-45 s (half hold 60 s long polls), waves 1/5/10/25/50/100 %, "
        "2 devices minimum per wave, soak 300 s, 60 s windows, silence after 180 s"
    )
    print(
        f"{'story':20} {'halted':>7} {'1st wave':>8} {'exposed':>8} {'windows to halt':>16} {'rolled back':>12}"
    )
    for story in BAD:
        rs = [run(story, seed=s, devices=args.devices) for s in range(args.seeds)]
        worst = max(rs, key=lambda r: (r.ever_ran_candidate, r.windows_to_halt or 0))
        leaks = sum(bool(r.violations) for r in rs)
        print(
            f"{story:20} {sum(r.stage == 'halted' for r in rs):>3}/{args.seeds:<3} {worst.first_wave_size:>8} "
            f"{worst.ever_ran_candidate:>8} {max(r.windows_to_halt or 0 for r in rs):>16} {worst.rolled_back:>12}"
            f"   (worst of {args.seeds} seeds; runs with a leak: {leaks})"
        )
    net = [run("network_timeouts", seed=s, devices=args.devices) for s in range(args.seeds)]
    print(
        f"{'network_timeouts':20} done {sum(r.stage == 'done' for r in net)}/{args.seeds}; largest admission in one "
        f"step {max(r.max_admitted_in_one_step for r in net)} of {args.devices} (the 50->100 % wave)"
    )
    t0 = time.perf_counter()
    good = [run("good", seed=s, devices=args.devices) for s in range(args.runs)]
    halts = sum(r.stage != "done" for r in good)
    print(
        f"{'good (noise)':20} reached 100 % in {args.runs - halts}/{args.runs} seeded runs; false halts: {halts} "
        f"({time.perf_counter() - t0:.1f} s for {args.runs} simulated rollouts)"
    )
    t0 = time.perf_counter()
    answers = leaks = 0
    for seed in range(args.schedules):
        r = run(**schedule(seed))  # type: ignore[arg-type]
        answers += r.polls + r.long_polls_answered
        leaks += bool(r.violations)
    print(
        f"{'random schedules':20} {args.schedules} schedules (restarts, holds, pauses, aborts), {answers} answers "
        f"checked, schedules with a leak: {leaks} ({time.perf_counter() - t0:.0f} s)"
    )


if __name__ == "__main__":
    main()
