"""Drift alert figures on the simulated site (run by hand: ``python -m tests.bench.drift_alert
[--stable] [SEEDS [FIRST_SEED]]``, ``--stable``: weeks of stable input only):
per shift size, the share of seeds alerted within a day of the shift, the median and worst minutes
to the alert, and the largest PSI of stable windows. The defaults (alert_at 0.1, 3 windows) were
picked on seeds 1 to 4; the tests in ``tests/core/test_drift_alert.py`` use other seeds."""

from __future__ import annotations

import statistics
import sys

from tests.core.test_drift_alert import _run


def stable_weeks(seeds: range) -> None:
    """Weeks of stable input (a day of past first): the share of weeks with any alert."""
    alerted, largest = 0, []
    for seed in seeds:
        top, _, early = _run(seed, 8.0, shift=0.0, past_days=1)
        alerted += early > 0
        largest.append(top)
    print(f"stable weeks: {alerted} of {len(seeds)} alerted; largest window PSI {max(largest):.3f}")


def main(seeds: range = range(1, 5)) -> None:
    for shift in (1.0, 1.5, 2.0):
        minutes, stable = [], []
        for seed in seeds:
            largest, first, early = _run(seed, 3.0, shift=shift, past_days=1)
            stable.append(largest)
            if first is not None and early == 0:
                minutes.append(first)
        share = len(minutes) / len(seeds)
        timing = (
            f"median {statistics.median(minutes):.0f} min, worst {max(minutes):.0f} min" if minutes else "-"
        )
        print(f"shift {shift} sd on a third: alerted {share:.0%}; {timing}; stable PSI max {max(stable):.3f}")


if __name__ == "__main__":
    stable = "--stable" in sys.argv
    args = [a for a in sys.argv[1:] if a != "--stable"]
    n = int(args[0]) if args else 4
    first = int(args[1]) if len(args) > 1 else 1
    (stable_weeks if stable else main)(range(first, first + n))
