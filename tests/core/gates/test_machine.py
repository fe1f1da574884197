"""The gate state machine (:mod:`gateway.core.gates.machine`) on a site of unlike devices."""

from __future__ import annotations

from gateway.core.gates import Action, GateLimits, open_gate, step
from gateway.core.gates import levels as L
from gateway.core.gates.table import RELATIVE
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings
from tests.core.gates.helpers import (
    BASELINE,
    CANDIDATE,
    MODEL,
    WINDOW_S,
    Fleet,
    drive,
    same,
    unlike_devices,
)

SITE = GateSettings(min_devices_per_wave=2, soak_min_s=300.0, min_samples=4)
LIMITS = GateLimits.of(HealthChecks(max_cpu_percent=80, max_error_rate=0.05, warmup_inferences=10), SITE)
SEEDS = (21, 22, 23)


def fleet(seed: int, n: int = 12) -> Fleet:
    return Fleet(unlike_devices(n, seed, bad_camera=seed % 2 == 1), seed, swing_period_s=7200.0)


def open_fresh(site: Fleet, settings: GateSettings, reference: L.Levels) -> tuple:  # type: ignore[type-arg]
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


def test_without_levels_in_time_wave_1_opens_on_the_absolute_limits_alone() -> None:
    """Only one device ever reports on the baseline: a relative comparison needs two, so the gate
    waits ``reference_wait_s``, then opens wave 1 and says what it judges with."""
    site = fleet(SEEDS[0])
    only = sorted(site.traits)[0]
    quiet = [d for d in site.traits if d != only]
    key = f"{MODEL}@{BASELINE}"
    got: L.Levels = {}
    state, made = open_fresh(site, SITE, {})
    assert [d.action for d in made] == [Action.OPEN]  # nobody reports on the baseline: nothing to wait for
    history = {}
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
