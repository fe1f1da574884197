"""Shadow agreement: the share of candidates halted in shadow and the time it took, by how many
frames they swap, and the share of good candidates that pass (run by hand; prints, never asserts).

    .venv/bin/python -m tests.bench.shadow_power [SEEDS]

Each seed is a site of 10 unlike devices with a day/night swing whose wave 1 (two devices) runs the
candidate in shadow at the gateway's defaults (one-minute windows, ``gates.min_samples`` 10), with
agreement that varies by device and by window (:mod:`tests.core.gates.shadow_site`).
"""

from __future__ import annotations

import dataclasses
import statistics
import sys

from gateway.core.gates import GateLimits, Stage
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings
from tests.core.gates.helpers import drive, opened, same, unlike_devices
from tests.core.gates.shadow_site import Labels, ShadowFleet

SITE = GateSettings(shadow=True)
LIMITS = GateLimits.of(HealthChecks(max_cpu_percent=80, max_error_rate=0.05, warmup_inferences=10), SITE)
WINDOWS = 120


def run(labels: Labels, seeds: range, settings: GateSettings = SITE) -> tuple[float, float, float, str]:
    halted, passed, times = 0, 0, []
    for seed in seeds:
        site = ShadowFleet(
            unlike_devices(10, seed, bad_camera=seed % 2 == 1), seed, labels, swing_period_s=7200.0
        )
        state = opened(site, settings)
        limits = dataclasses.replace(LIMITS, site=settings)
        state, made = drive(
            state, site, limits, same, windows=WINDOWS, until=lambda s: s.stage != Stage.SHADOW
        )
        halted += state.stage == Stage.HALTED
        passed += state.stage == Stage.WAVES
        if state.stage != Stage.SHADOW:
            times.append((made[-1].at - state.decisions[0].at) / 60)
    n = len(seeds)
    med = f"{statistics.median(times):.0f} min" if times else "-"
    return halted / n, passed / n, (n - halted - passed) / n, med


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    seeds = range(9000, 9000 + n)
    print(f"{n} seeds, {WINDOWS} one-minute windows at most, wave 1 of two devices in shadow")
    print("candidate                                  halted  passed  undecided  median time")
    stories = [
        ("good: 1 % random disagreement", Labels(miss=0.01)),
        ("swap person/forklift on 1 % of frames", Labels(miss=0.01, swap=("person", "forklift", 0.01))),
        ("swap person/forklift on 2 % of frames", Labels(miss=0.01, swap=("person", "forklift", 0.02))),
        ("swap person/forklift on 3 % of frames", Labels(miss=0.01, swap=("person", "forklift", 0.03))),
        ("swap person/forklift on 5 % of frames", Labels(miss=0.01, swap=("person", "forklift", 0.05))),
        ("spill (1 %) as forklift on 30 % of spill", Labels(miss=0.01, relabel=("spill", "forklift", 0.3))),
        ("spill (1 %) as forklift on 60 % of spill", Labels(miss=0.01, relabel=("spill", "forklift", 0.6))),
    ]
    for name, labels in stories:
        h, p, u, med = run(labels, seeds)
        print(f"{name:42s} {h:6.0%}  {p:6.0%}  {u:9.0%}  {med}")
    blind = GateSettings(shadow=True, dry_run=("shadow_agreement", "shadow_class_agreement"))
    h, p, u, med = run(stories[4][1], seeds, blind)
    print(f"{'swap 5 %, agreement rows dry-run (before)':42s} {h:6.0%}  {p:6.0%}  {u:9.0%}  {med}")


if __name__ == "__main__":
    main()
