"""The reference agent's shadow reports: both models on the same frames, with their agreement, and
the simulation's knob that makes a candidate swap two classes (what the gate's shadow story uses)."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from gateway.agent.shadow import reports
from gateway.agent.simulate import CLASSES, HEALTHY, Profile, SimulatedInference
from gateway.agent.slots import SlotInfo
from gateway.core.metrics import parse_metrics

ACTIVE = SlotInfo("a", "detector", "1.0.0", "aa" * 32)
CAND = SlotInfo("b", "detector", "2.0.0", "bb" * 32)


def _run(
    profile: Profile, seed: int, windows: int = 200
) -> tuple[dict[str, list[int]], dict[str, int], int, int]:
    sim = SimulatedInference({"2.0.0": profile}, interval_s=10.0, rng=random.Random(seed))
    classes: dict[str, list[int]] = {}
    pairs: dict[str, int] = {}
    frames = agree = 0
    for _ in range(windows):
        _active, cand = sim.shadow(ACTIVE, CAND)
        a = parse_metrics("cam-1", {**cand, "model_version": "2.0.0", "shadow": True}, 0.0).agreement
        assert a is not None
        frames, agree = frames + a.frames, agree + a.agree
        for k, (n, m) in a.classes.items():
            mine = classes.setdefault(k, [0, 0])
            mine[0], mine[1] = mine[0] + n, mine[1] + m
        for k, n in a.pairs.items():
            pairs[k] = pairs.get(k, 0) + n
    return classes, pairs, frames, agree


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_a_swapping_candidate_disagrees_on_its_share_of_frames_only_between_the_two(seed: int) -> None:
    classes, pairs, frames, agree = _run(swapping(0.05), seed)
    assert 1 - agree / frames == pytest.approx(0.05, abs=0.006)
    assert set(pairs) == {"person->forklift", "forklift->person"}
    assert pairs["person->forklift"] == pytest.approx(pairs["forklift->person"], rel=0.2)  # half each way
    per = {k: m / n for k, (n, m) in classes.items()}
    assert per["pallet"] == 1.0
    assert per["forklift"] == pytest.approx(1 - 0.025 / CLASSES["forklift"], abs=0.01)


def swapping(share: float) -> Profile:
    return Profile(swap=("person", "forklift", share))


@pytest.mark.parametrize("seed", [21, 22])
def test_a_good_candidate_agrees_on_about_99_percent(seed: int) -> None:
    _classes, _pairs, frames, agree = _run(Profile(disagree=0.01), seed)
    assert agree / frames == pytest.approx(0.99, abs=0.003)


def test_the_swap_keeps_latency_cpu_and_class_shares() -> None:
    """The same frames: the candidate's class counts differ from the active model's by noise only."""
    sim = SimulatedInference({"2.0.0": swapping(0.05)}, interval_s=10.0, rng=random.Random(5))
    totals = {"a": dict.fromkeys(CLASSES, 0), "c": dict.fromkeys(CLASSES, 0)}
    for _ in range(400):
        active, cand = sim.shadow(ACTIVE, CAND)
        for who, doc in (("a", active), ("c", cand)):
            for k, n in doc["class_counts"].items():
                totals[who][k] += n
    for k in CLASSES:
        a, c = totals["a"][k] / sum(totals["a"].values()), totals["c"][k] / sum(totals["c"].values())
        assert c == pytest.approx(a, abs=0.01), k
    assert HEALTHY.latency_ms == Profile().latency_ms


def test_reports_send_the_candidate_as_a_shadow_message_beside_the_active() -> None:
    sim = SimulatedInference({}, interval_s=1.0, rng=random.Random(1))
    docs = reports("cam-1", ACTIVE, CAND, sim, sim.shadow)
    assert [(d["model_version"], d.get("shadow", False)) for d in docs] == [("1.0.0", False), ("2.0.0", True)]
    assert "agreement" in docs[1] and "agreement" not in docs[0]
    for d in docs:
        parse_metrics("cam-1", d, 0.0)  # both are valid reference messages
    assert [d["model_version"] for d in reports("cam-1", ACTIVE, None, sim, sim.shadow)] == ["1.0.0"]
    assert reports("cam-1", None, CAND, sim, sim.shadow) == []


@pytest.mark.parametrize("value", ["person,person,0.05", "person,car,0.05", "person,forklift,0.9", "x"])
def test_the_command_lines_swap_knob_refuses_what_it_cannot_simulate(value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.agent", "--simulate", "--simulate-swap", value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--simulate-swap" in done.stderr and "A,B,SHARE" in done.stderr
