"""Every criterion of the gate table on a site of unlike devices (traffic spread 4x, error rates
drawn wide, a bad camera with 8x the site's errors in half the seeds, a night-and-day swing that moves
every device at once): a clearly worse candidate halts in wave 1 with its evidence (estimate, bounds
on the worse side of the margin, an e-value past the stated rate, the sample, the words), and a
clearly good one says "no worse" on every criterion."""

from __future__ import annotations

import pytest

from gateway.core.gates import GateLimits, Stage
from gateway.core.gates.sequential import Answer
from gateway.core.gates.table import CRITERIA
from gateway.core.gates.words import say
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings
from tests.core.gates.helpers import Fleet, drive, opened, same, unlike_devices

SITE = GateSettings(min_devices_per_wave=2, soak_min_s=300.0, min_samples=4)
HEALTH = HealthChecks(
    max_cpu_percent=80,
    max_ram_percent=70,
    max_latency_ms=150,
    max_error_rate=0.05,
    warmup_inferences=10,
    min_confidence=0.5,
    expected_classes=(("spill", 0.005),),
)
LIMITS = GateLimits.of(HEALTH, SITE)
SEEDS = (11, 12, 13)  # odd seeds have the bad camera
DEVICES = 12


def fleet(seed: int) -> Fleet:
    return Fleet(unlike_devices(DEVICES, seed, bad_camera=seed % 2 == 1), seed, swing_period_s=7200.0)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_clearly_good_candidate_says_no_worse_on_every_criterion(seed: int) -> None:
    site = fleet(seed)
    state = opened(site, SITE)
    state, made = drive(state, site, LIMITS, same, windows=20, until=lambda s: s.wave > 0)
    assert state.stage == Stage.WAVES and state.wave == 1, [d.reason for d in made]
    advance = made[-1]
    assert advance.action == "advance" and advance.reason.startswith("wave 1 passed; wave 2 opens")
    # as soon as the evidence says so: no later than the fixed soak of the gate before (900 s)
    assert SITE.soak_min_s <= advance.at <= 900.0
    judged = {v.criterion for v in advance.verdicts}
    want = {c.name for c in CRITERIA if c.metric != "class:"} | {"expected_class:spill"}
    want |= {f"class:{k}" for k in ("person", "forklift", "spill")}
    assert judged == want
    for v in advance.verdicts:
        assert v.result == Answer.NO_WORSE, say(v)
        assert v.e_value is not None and v.e_value < 1 / SITE.false_halt_rate, say(v)
        assert say(v).endswith(": no worse")
