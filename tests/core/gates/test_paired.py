"""Each device against its own level, what changed for everyone taken out
(:mod:`gateway.core.gates.paired`), on a site whose devices report every other window, in two
groups in step: the first wave is exactly one group, so no window has a device on the candidate
beside one still on the baseline. (Found by ``tests/bench/gate_power.py``: at 10 devices, seed
10109, every bad story stayed undecided for its whole soak, "not enough data yet", with four
devices reporting on the candidate for four hours.)"""

from __future__ import annotations

import dataclasses

import pytest

from gateway.core.gates import Action, GateLimits, GateState, Stage, step
from gateway.core.gates.paired import SHARED_MAX_AGE_S
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings
from tests.core.gates.helpers import WINDOW_S, Change, Fleet, Traits, opened, same, unlike_devices

SITE = GateSettings(min_devices_per_wave=4, soak_min_s=300.0, min_samples=4, first_wave_error_level=0.0)
LIMITS = GateLimits.of(HealthChecks(max_cpu_percent=95, warmup_inferences=10), SITE)


def slower(t: Traits) -> Traits:
    return dataclasses.replace(t, latency_ms=t.latency_ms * 2.5)


def in_step(state: GateState, fleet: Fleet, change: Change, windows: int) -> GateState:
    """The first wave's devices report in one window, every other device in the next; the gate
    stepped after each window."""
    wave = set(state.admitted)
    rest = [d for d in fleet.traits if d not in wave]
    for k in range(windows):
        t = k * WINDOW_S
        ws = fleet.window(t, wave, change, silent=rest if k % 2 == 0 else wave)
        state, _ = step(state, now=t + WINDOW_S, limits=LIMITS, eligible=fleet.eligible, windows=ws)
        if state.stage != Stage.WAVES or state.wave > 0:
            break
    return state


@pytest.mark.parametrize("seed", (31, 32, 33))
def test_a_first_wave_that_never_reports_beside_the_baseline_is_still_judged(seed: int) -> None:
    site = Fleet(unlike_devices(10, seed), seed)
    state = in_step(opened(site, SITE), site, slower, windows=120)
    assert state.stage == Stage.HALTED, [d.reason for d in state.decisions]
    assert state.decisions[-1].reason == "worse: latency (latency_ratio)"
    good = in_step(opened(site, SITE), site, same, windows=120)
    assert good.stage == Stage.WAVES and good.wave == 1, [d.reason for d in good.decisions]
    assert good.decisions[-1].action == Action.ADVANCE


def test_what_changed_for_everyone_is_not_carried_past_its_age() -> None:
    """The devices still on the baseline report once and fall silent: the wave's windows are
    compared while that change may stand in (:data:`SHARED_MAX_AGE_S`), and not after it: with
    more windows needed than that, the wave is never judged (undecided, never a pass)."""
    site = Fleet(unlike_devices(10, 34), 34)
    carried = int(SHARED_MAX_AGE_S // WINDOW_S)
    settings = dataclasses.replace(SITE, min_samples=carried + 5)
    limits = GateLimits.of(HealthChecks(max_cpu_percent=95, warmup_inferences=10), settings)
    state = opened(site, settings)
    wave = set(state.admitted)
    rest = [d for d in site.traits if d not in wave]
    for k in range(60):
        t = k * WINDOW_S
        ws = site.window(t, wave, same, silent=wave if k == 0 else rest)
        state, _ = step(state, now=t + WINDOW_S, limits=limits, eligible=site.eligible, windows=ws)
    assert state.stage == Stage.WAVES and state.wave == 0, [d.reason for d in state.decisions]
    assert state.streams["latency_ratio"].windows == carried
