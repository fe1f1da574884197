"""The gate state machine (:mod:`gateway.core.gates.machine`) on a site of unlike devices: waiting
for the devices' own levels before wave 1, the shortest soak and warm-up, the longest soak asking a
person, the last wave, controls and the shadow stage. Waves are numbered from 1 for people."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping

import pytest

from gateway.core.gates import (
    Action,
    Control,
    Decision,
    Event,
    GateLimits,
    GateState,
    Stage,
    evaluate,
    open_gate,
    step,
)
from gateway.core.gates import levels as L
from gateway.core.gates.sequential import Answer
from gateway.core.gates.table import RELATIVE
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings
from tests.core.gates.helpers import (
    BASELINE,
    CANDIDATE,
    MODEL,
    WINDOW_S,
    Fleet,
    Traits,
    drive,
    opened,
    same,
    unlike_devices,
)

# the first wave at its count (2) whatever its devices' errors, as these tests count on (the first
# wave sized by its errors: tests/core/test_waves.py)
SITE = GateSettings(min_devices_per_wave=2, soak_min_s=300.0, min_samples=4, first_wave_error_level=0.0)
LIMITS = GateLimits.of(HealthChecks(max_cpu_percent=80, max_error_rate=0.05, warmup_inferences=10), SITE)
SEEDS = (21, 22, 23)


def fleet(seed: int, n: int = 12) -> Fleet:
    return Fleet(unlike_devices(n, seed, bad_camera=seed % 2 == 1), seed, swing_period_s=7200.0)


def open_fresh(site: Fleet, settings: GateSettings, reference: L.Levels) -> tuple[GateState, list[Decision]]:
    return open_gate(
        f"{MODEL}@{CANDIDATE}",
        MODEL,
        CANDIDATE,
        BASELINE,
        sha256="ab" * 32,
        settings=settings,
        now=0.0,
        eligible=site.eligible,
        reference=reference,
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_a_fresh_gateway_waits_for_the_devices_levels_before_wave_1(seed: int) -> None:
    """The gateway just started: the baseline's devices report, but no device has a level yet.
    Nobody is admitted until two devices have one (each device is compared with its own past);
    then wave 1 opens, with the levels of that moment."""
    site = fleet(seed)
    key = f"{MODEL}@{BASELINE}"
    got = L.update(
        {}, site.window(-WINDOW_S), versions=frozenset({key}), half_life_s=SITE.reference_half_life_s
    )
    state, made = open_fresh(site, SITE, got[key])
    assert [d.action for d in made] == [Action.WAIT_REFERENCE] and not state.admitted
    assert made[0].reason.startswith(
        "waiting for the devices' own levels on 1.0.0 (at most 15 min) before wave 1"
    )
    for k in range(10):
        t = k * WINDOW_S
        ws = site.window(t)
        got = L.update(got, ws, versions=frozenset({key}), half_life_s=SITE.reference_half_life_s)
        state, made = step(
            state, now=t + WINDOW_S, limits=LIMITS, eligible=site.eligible, windows=ws, reference=got[key]
        )
        mature = sum(1 for m in got[key].values() if any(L.value(lv) is not None for lv in m.values()))
        assert bool(state.admitted) == (mature >= 2)
        if state.admitted:
            break
    assert k + 2 >= L.MIN_WINDOWS  # the window before the gate, and these
    assert [d.action for d in made] == [Action.OPEN]
    assert made[0].reason == "waves stage, wave 1: 2 device(s) admitted"
    assert state.reference == got[key] and {"person", "forklift", "spill"} <= set(state.classes)
    assert {v.criterion for v in evaluate(state, LIMITS)} >= {
        c.name for c in RELATIVE if c.metric != "class:"
    }


def test_without_levels_in_time_wave_1_opens_on_the_absolute_limits_alone() -> None:
    """Only one device ever reports on the baseline: a relative comparison needs two, so the gate
    waits ``reference_wait_s``, then opens wave 1 and says what it judges with."""
    site = fleet(SEEDS[0])
    only = sorted(site.traits)[0]
    quiet = [d for d in site.traits if d != only]
    key = f"{MODEL}@{BASELINE}"
    state, made = open_fresh(site, SITE, {})
    assert [d.action for d in made] == [Action.OPEN]  # nobody reports on the baseline: nothing to wait for
    history: Mapping[str, L.Levels] = {}
    for k in range(5):
        history = L.update(
            history,
            site.window(-(5 - k) * WINDOW_S, silent=quiet),
            versions=frozenset({key}),
            half_life_s=3600,
        )
    got = history[key]
    state, made = open_fresh(site, SITE, got)
    assert [d.action for d in made] == [Action.WAIT_REFERENCE]
    t = 0.0
    while not state.admitted:
        state, made = step(state, now=t, limits=LIMITS, eligible=site.eligible, reference=got)
        assert state.admitted or not made
        t += WINDOW_S
    assert t - WINDOW_S == SITE.reference_wait_s
    assert (
        made[0].reason
        == "waves stage, wave 1: 2 device(s) admitted (no levels on the baseline: absolute limits only)"
    )
    # the candidate's devices have no level to be compared with: once the minimum sample is in,
    # the relative rows are left out, and the wave passes on the others
    state, made = drive(state, site, LIMITS, same, windows=20, start=t, until=lambda s: s.wave > 0)
    assert made and made[-1].action == Action.ADVANCE, [d.reason for d in made]
    names = {v.criterion for v in made[-1].verdicts}
    assert "max_cpu_percent" in names and not names & {c.name for c in RELATIVE}


@pytest.mark.parametrize("seed", SEEDS)
def test_a_good_candidate_soaks_its_shortest_soak_and_reaches_every_device(seed: int) -> None:
    """Wave 1 advances at the first look where every criterion says no worse and ``soak_min_s``
    has passed (not before, even when the evidence is in early); each wave after it the same, and
    the last (nobody left on the baseline to compare with) finishes on the rows that need none."""
    site = fleet(seed)
    state = opened(site, SITE)
    early = False
    for k in range(30):
        state, made = drive(state, site, LIMITS, same, windows=1, start=k * WINDOW_S)
        now = (k + 1) * WINDOW_S
        if made:
            break
        every = all(v.result == Answer.NO_WORSE for v in evaluate(state, LIMITS, now))
        assert not (every and now >= SITE.soak_min_s)  # it would have advanced
        early |= every
    assert made[0].action == Action.ADVANCE and made[0].at >= SITE.soak_min_s
    assert made[0].reason == "wave 1 passed; wave 2 opens with 4 device(s)"
    assert all(v.result == Answer.NO_WORSE for v in made[0].verdicts)
    if early:
        assert made[0].at == SITE.soak_min_s
    rest = made
    state, made = drive(
        state, site, LIMITS, same, windows=80, start=now, until=lambda s: s.stage != Stage.WAVES
    )
    made = rest + made
    assert state.stage == Stage.DONE, [d.reason for d in made]
    advances = [d for d in made if d.action == Action.ADVANCE]
    assert [d.reason.split(";")[0] for d in advances] == [f"wave {k} passed" for k in range(1, 6)]
    for a, b in itertools.pairwise(advances):
        assert b.at - a.at >= SITE.soak_min_s
    done = made[-1]
    assert done.action == Action.DONE and done.reason == "every wave passed"
    assert len(state.admitted) == len(site.traits)
    relative = {c.name for c in RELATIVE}
    assert all(v.criterion.split(":")[0] in relative for v in done.verdicts if v.result != Answer.NO_WORSE)


def test_a_wave_waits_for_its_devices_warm_up() -> None:
    limits = GateLimits.of(HealthChecks(max_cpu_percent=80, warmup_inferences=4000), SITE)
    site = fleet(SEEDS[0])
    slow = {d: dataclasses.replace(t, traffic=0.5) for d, t in site.traits.items()}
    site = Fleet(slow, SEEDS[0])
    state = opened(site, SITE)
    state, made = drive(state, site, limits, same, windows=30, until=lambda s: s.wave > 0)
    # 50 inferences a report, 3 reports a window: 4000 after about 27 windows, past the soak
    assert made and made[-1].action == Action.ADVANCE
    assert made[-1].at >= 25 * WINDOW_S
    assert all(state.candidate.per_device.get(d, 0) == 0 for d in state.admitted if state.admitted[d] == 1)


def test_still_undecided_at_the_longest_soak_a_wave_waits_for_a_person() -> None:
    """Errors exactly at the margin (+1 point), at a site that asks for strong evidence of "no
    worse" (``no_worse_risk`` 1 %): neither answer comes. At ``soak_max_s`` the wave asks for
    approval, in words; it waits as long as it takes; an approval opens wave 2."""
    settings = dataclasses.replace(SITE, soak_max_s=1800.0, no_worse_risk=0.01)
    site = Fleet(unlike_devices(12, SEEDS[1]), SEEDS[1])  # no swing: the rise stays at the margin
    state = opened(site, settings)

    def at_margin(t: Traits) -> Traits:
        return dataclasses.replace(t, error_rate=t.error_rate + settings.error_rate_rise_max)

    state, made = drive(state, site, LIMITS_WITH(settings), at_margin, windows=50)
    assert state.stage == Stage.WAVES and state.wave == 0 and state.awaiting_approval
    (ask,) = made
    assert ask.action == Action.AWAIT and ask.at == settings.soak_max_s
    assert ask.reason == (
        "wave 1 still undecided after 0.5 h (errors: undecided): "
        "`ota-gateway gate approve` advances it, `abort` stops it"
    )
    state, made = step(
        state,
        now=3600.0,
        limits=LIMITS_WITH(settings),
        eligible=site.eligible,
        controls=[Control("approve", "operator:ana", "within what we accept")],
    )
    assert [d.action for d in made] == [Action.APPROVE, Action.ADVANCE] and made[0].by == "operator:ana"
    assert state.wave == 1 and made[1].reason == "wave 1 passed; wave 2 opens with 4 device(s)"


def LIMITS_WITH(settings: GateSettings) -> GateLimits:
    return dataclasses.replace(LIMITS, site=settings)


def test_controls_hold_release_abort() -> None:
    site = fleet(SEEDS[0])
    state = opened(site, SITE)
    e = site.eligible
    state, made = step(
        state, now=10, limits=LIMITS, eligible=e, controls=[Control("hold", "operator:ana", "line stop")]
    )
    assert state.held_by == "operator:ana" and made[0].by == "operator:ana"
    state, made = step(state, now=20, limits=LIMITS, eligible=e, controls=[Control("release", "cloud")])
    assert state.held_by is None and made[0].action == Action.RELEASE
    ran = sorted(state.admitted)[0]
    state, _ = step(state, now=30, limits=LIMITS, eligible=e, events=[Event(ran, "activated", CANDIDATE)])
    state, made = step(
        state, now=40, limits=LIMITS, eligible=e, controls=[Control("abort", "cloud", "signed")]
    )
    assert state.stage == Stage.ABORTED and ran in state.rollback_set


@pytest.mark.parametrize("seed", SEEDS)
def test_a_held_wave_does_not_advance_and_soaks_again_after_its_release(seed: int) -> None:
    site = fleet(seed)
    state = opened(site, SITE)
    state, _ = step(
        state, now=0, limits=LIMITS, eligible=site.eligible, controls=[Control("hold", "operator:ana")]
    )
    state, made = drive(state, site, LIMITS, same, windows=10)
    assert state.wave == 0 and not made
    state, made = step(
        state, now=600, limits=LIMITS, eligible=site.eligible, controls=[Control("release", "operator:ana")]
    )
    assert [d.action for d in made] == [Action.RELEASE]
    state, made = drive(state, site, LIMITS, same, windows=10, start=600.0, until=lambda s: s.wave > 0)
    assert made[-1].action == Action.ADVANCE and made[-1].at >= 600 + SITE.soak_min_s


@pytest.mark.parametrize("seed", SEEDS)
def test_the_shadow_stage_judges_the_candidate_before_anyone_switches(seed: int) -> None:
    """In shadow a device runs both models on the same frames: its own active model's window is
    what the candidate is compared with. A good candidate leaves the shadow stage for wave 1; one
    that burns CPU halts there, and nobody ran it, so nobody is rolled back."""
    settings = dataclasses.replace(SITE, shadow=True)
    limits = LIMITS_WITH(settings)
    site = fleet(seed)
    state = opened(site, settings)
    assert state.stage == Stage.SHADOW and state.decisions[0].reason.startswith(
        "shadow stage, wave 1: 2 device(s)"
    )
    state, made = drive(state, site, limits, same, windows=20, until=lambda s: s.stage != Stage.SHADOW)
    assert not state.ran  # shadow metrics never count as running it
    assert state.stage == Stage.WAVES and made[-1].action == Action.ADVANCE
    assert made[-1].reason == "shadow stage passed: wave 1 switches to the candidate"
    assert made[-1].at >= settings.soak_min_s
    state = opened(site, settings)

    def hot(t: Traits) -> Traits:
        return dataclasses.replace(t, cpu=t.cpu + 35)

    state, made = drive(state, site, limits, hot, windows=20, until=lambda s: s.stage != Stage.SHADOW)
    assert state.stage == Stage.HALTED and "cpu_rise_percent" in made[-1].reason
    assert not state.rollback_set
