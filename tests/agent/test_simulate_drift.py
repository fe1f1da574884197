"""The reference agent's simulated drift sketches: valid for the gateway's parser, and moved by the
``--drift-shift`` knob from its instant on (what the system test turns to drive drift)."""

from __future__ import annotations

import random

from gateway.agent.simulate import SimulatedInference
from gateway.agent.slots import SlotInfo
from gateway.core.drift_psi import psi
from gateway.core.drift_sketch import parse_drift


def test_the_knob_moves_the_sketches_from_its_instant_on() -> None:
    now = [0.0]
    sim = SimulatedInference(
        {}, interval_s=20.0, rng=random.Random(4), drift_shift=2.0, drift_shift_at=100.0, clock=lambda: now[0]
    )
    slot = SlotInfo("a", "detector", "1.0.0", "ab" * 32)
    before = parse_drift(sim(slot)["drift"], "agent")
    again = parse_drift(sim(slot)["drift"], "agent")
    now[0] = 100.0
    after = parse_drift(sim(slot)["drift"], "agent")
    assert set(before) == {"brightness", "pc1"}
    for feature in before:
        assert before[feature].count == 200
        assert psi(before[feature], again[feature]) < 0.1
        assert psi(before[feature], after[feature]) > 1.0
