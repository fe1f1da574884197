"""A model's first version at the site (no baseline): the criteria that need none judge each wave
(silence, invalid metrics, the manifest's confidence floor and expected classes, the absolute
limits), and dry run and approval work the same. Ported from tests/core/test_site.py."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.core.gates import Action, Control, Event, GateLimits, Stage, evaluate, step
from gateway.core.gates.sequential import Answer
from gateway.core.gates.table import RELATIVE
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings
from gateway.core.window import GroupKey
from tests.core.gates.helpers import (
    CANDIDATE,
    WINDOW_S,
    Fleet,
    Traits,
    drive,
    opened,
    same,
    unlike_devices,
    verdict,
)

SETTINGS = GateSettings(min_devices_per_wave=2, soak_min_s=300.0, min_samples=4, silence_after_s=180.0)
SEEDS = (31, 32, 33)


def first(seed: int, settings: GateSettings = SETTINGS, health: HealthChecks | None = None):  # type: ignore[no-untyped-def]
    site = Fleet(unlike_devices(12, seed, bad_camera=seed % 2 == 1), seed, swing_period_s=7200.0)
    limits = GateLimits.of(health or HealthChecks(warmup_inferences=10), settings)
    state = opened(site, settings, baseline=None)
    assert state.baseline_version is None and not state.reference
    n = len(state.admitted)
    assert state.decisions[0].reason == (
        f"waves stage, wave 1: {n} device(s) admitted (first version at this site, no baseline)"
    )
    return state, limits, site


@pytest.mark.parametrize("seed", SEEDS)
def test_devices_that_go_silent_after_activating_halt_a_first_version(seed: int) -> None:
    """The app crashes on the candidate: its metrics stop. Eight of eight silent halts once
    ``silence_after_s`` has passed (two of two cannot: tests/core/gates/test_criteria.py)."""
    settings = dataclasses.replace(SETTINGS, min_devices_per_wave=8)
    state, limits, site = first(seed, settings)
    wave = sorted(state.admitted)
    assert len(wave) == 8
    events = [Event(d, "activated", CANDIDATE) for d in wave]
    state, _ = step(state, now=10, limits=limits, eligible=site.eligible, events=events)
    state, made = step(state, now=10 + settings.silence_after_s - 1, limits=limits, eligible=site.eligible)
    assert state.stage == Stage.WAVES and not made
    state, made = step(state, now=10 + settings.silence_after_s + 1, limits=limits, eligible=site.eligible)
    assert state.stage == Stage.HALTED and made[-1].reason == "worse: devices gone silent (silence)"
    v = verdict(made[-1], "silence")
    assert v.samples == {"runners": 8, "silent": 8} and v.result == Answer.WORSE
    assert v.e_value is not None and v.e_value >= 1 / settings.false_halt_rate


def test_a_device_that_moved_on_to_another_version_is_not_silent() -> None:
    state, limits, site = first(SEEDS[0])
    wave = sorted(state.admitted)
    events = [Event(d, "activated", CANDIDATE) for d in wave]
    state, _ = step(state, now=10, limits=limits, eligible=site.eligible, events=events)
    moved = [
        dataclasses.replace(w, key=GroupKey("detector", "3.0.0", "rev1"))
        for w in site.window(600, wave)
        if w.key.model_version == CANDIDATE
    ]
    state, _ = step(
        state, now=10 + SETTINGS.silence_after_s + 1, limits=limits, eligible=site.eligible, windows=moved
    )
    assert state.stage == Stage.WAVES


@pytest.mark.parametrize("seed", SEEDS)
def test_invalid_metrics_from_the_candidate_halt_it(seed: int) -> None:
    state, limits, site = first(seed)

    def own_counting(t: Traits) -> Traits:
        return dataclasses.replace(t, invalid=0.9)

    state, made = drive(state, site, limits, own_counting, windows=12, until=lambda s: s.stage != Stage.WAVES)
    assert (
        state.stage == Stage.HALTED
        and made[-1].reason == "worse: metrics refused as invalid over its limit (invalid_metrics)"
    )
    assert verdict(made[-1], "invalid_metrics").result == Answer.WORSE


@pytest.mark.parametrize("seed", SEEDS)
def test_the_manifests_confidence_floor_and_expected_classes_judge_a_first_version(seed: int) -> None:
    health = HealthChecks(warmup_inferences=10, min_confidence=0.6, expected_classes=(("spill", 0.005),))
    state, limits, site = first(seed, health=health)
    ok, _ = drive(state, site, limits, same, windows=SETTINGS.min_samples + 4)
    answers = {v.criterion: v.result for v in evaluate(ok, limits)}
    assert answers["min_confidence"] == answers["expected_class:spill"] == Answer.NO_WORSE
    assert not {c.name for c in RELATIVE} & set(answers)  # no baseline: no relative row

    def bad(t: Traits) -> Traits:
        return dataclasses.replace(t, confidence=0.45, classes=(("person", 0.7), ("forklift", 0.3)))

    state, made = drive(state, site, limits, bad, windows=12, until=lambda s: s.stage != Stage.WAVES)
    assert state.stage == Stage.HALTED
    assert "min_confidence" in made[-1].reason and "expected_class:spill" in made[-1].reason


def test_dry_run_criteria_are_recorded_never_acted_on() -> None:
    settings = dataclasses.replace(SETTINGS, dry_run=("max_cpu_percent",), soak_min_s=900.0)
    state, limits, site = first(SEEDS[0], settings, HealthChecks(max_cpu_percent=50, warmup_inferences=10))

    def hot(t: Traits) -> Traits:
        return dataclasses.replace(t, cpu=90.0)

    state, made = drive(state, site, limits, hot, windows=SETTINGS.min_samples)
    assert state.stage == Stage.WAVES and [d.action for d in made] == [Action.OBSERVE]
    assert made[0].reason == "dry run: would have halted on CPU over its limit (max_cpu_percent)"
    (v,) = made[0].verdicts
    assert v.dry_run and v.result == Answer.WORSE
    state, made = drive(state, site, limits, hot, windows=1, start=SETTINGS.min_samples * WINDOW_S)
    assert not made  # once per wave


def test_approve_each_wave_waits_for_a_person() -> None:
    settings = dataclasses.replace(SETTINGS, approve_each_wave=True)
    state, limits, site = first(SEEDS[0], settings)
    state, made = drive(state, site, limits, same, windows=20, until=lambda s: s.awaiting_approval)
    assert state.awaiting_approval and state.wave == 0
    assert made[-1].action == Action.AWAIT and made[-1].reason == "wave 1 passed; waiting for approval"
    state, made = drive(state, site, limits, same, windows=30, start=20 * WINDOW_S)
    assert state.wave == 0 and not made  # it waits as long as it takes
    state, made = step(
        state,
        now=3000,
        limits=limits,
        eligible=site.eligible,
        controls=[Control("approve", "operator:ana", "looks good")],
    )
    assert state.wave == 1 and [d.action for d in made] == [Action.APPROVE, Action.ADVANCE]
