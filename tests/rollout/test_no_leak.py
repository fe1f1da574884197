"""The canary gate's promise over many random schedules, through the real decisions (the fast pure
variant; ``test_gate_invariant_process.py`` runs the same promise through the real process).

Each schedule is a site of random size whose devices poll at random instants, half of them holding
long polls; the candidate's index lands at a random instant and its artifact verifies later; the
gateway restarts, operators hold and release, the coordinator pauses, and sometimes an operator
aborts, all at random instants. On every answer that offers the candidate the simulation checks,
from what the devices were told and the wave plan alone: the devices ever offered it never exceed
what the open wave admits, no halted or aborted version is offered, and after a halt no new device
gets it.

``GATE_SCHEDULES`` sets the number of schedules (the default run keeps the suite fast; ``.ci/run``
runs 1,000 as a further step).
"""

from __future__ import annotations

import dataclasses
import os
import random

import pytest

from tests.rollout.sim import DEFAULT_SETTINGS, STORY_BEHAVIOUR, Chaos, run

SCHEDULES = int(os.environ.get("GATE_SCHEDULES", "20"))


def schedule(seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    settings = dataclasses.replace(
        DEFAULT_SETTINGS,
        waves=rng.choice([(1.0, 5.0, 10.0, 25.0, 50.0, 100.0), (10.0, 50.0, 100.0), (5.0, 100.0)]),
        min_devices_per_wave=rng.choice([1, 2, 3]),
        soak_min_s=rng.choice([120.0, 300.0, 600.0]),
        approve_each_wave=rng.random() < 0.1,
    )
    chaos = Chaos(
        restarts=rng.randint(0, 3),
        holds=rng.randint(0, 2),
        pauses=rng.randint(0, 2),
        abort=rng.random() < 0.15,
    )
    return {
        "story": rng.choice(sorted(STORY_BEHAVIOUR)),
        "seed": seed,
        "devices": rng.randint(10, 120),
        "hours": 1.0,
        "report_s": 60.0,  # one report per window: the invariant, not the statistics, is on trial
        "settings": settings,
        "chaos": chaos,
    }


def test_no_schedule_offers_the_candidate_beyond_its_open_wave() -> None:
    answers = restarts = memo_hits = 0
    failures: list[str] = []
    for seed in range(SCHEDULES):
        spec = schedule(seed)
        r = run(**spec)  # type: ignore[arg-type]
        answers += r.polls + r.long_polls_answered
        restarts += r.restarts
        memo_hits += r.memo_hits
        if r.violations:
            failures.append(f"seed {seed} ({spec['story']}, {spec['devices']} devices): {r.violations[0]}")
    print(
        f"{SCHEDULES} schedules, {answers} poll answers checked, {restarts} restarts, {len(failures)} leaks; "
        f"{memo_hits} answers from the poll memo, each the same as the policy's"
    )
    assert not failures, "\n".join(failures[:10])


def test_a_leak_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check itself can fail: a gate that admits every device it is asked about leaks."""
    from tests.rollout import sim

    class Leaky(sim._Gates):
        def admit(self, candidate, device, now):  # type: ignore[no-untyped-def]
            return None

    monkeypatch.setattr(sim, "_Gates", Leaky)
    assert run("cpu_spike", seed=1, devices=40, hours=1.0).violations
