"""The shadow stage judges the candidate's agreement with the active model on the same frames.

The stories of issue 26: a candidate that swaps two classes on 5 % of frames, with the same latency,
CPU and class shares, is halted in shadow before any device switches (the gate's other rows, which
see only its metrics, pass it); a rare class swapped is seen by its own row; a good candidate
(agreement about 99 %) passes shadow. Every site here has unlike devices, a day/night swing, and
agreement that varies by device and by window (:mod:`tests.core.gates.shadow_site`).
"""

from __future__ import annotations

import dataclasses
import statistics

import pytest

from gateway.core.gates import Action, GateLimits, Stage, Verdict
from gateway.core.gates.table import BY_NAME
from gateway.core.gates.words import say
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings
from gateway.rollout.gate_store import state_from_json, state_to_json
from tests.core.gates.helpers import WINDOW_S, drive, opened, same, unlike_devices, verdict
from tests.core.gates.shadow_site import Labels, ShadowFleet

SITE = GateSettings(shadow=True)  # the defaults: min_samples 10 one-minute windows, soak_min_s 300
LIMITS = GateLimits.of(HealthChecks(max_cpu_percent=80, max_error_rate=0.05, warmup_inferences=10), SITE)
SWAP = Labels(miss=0.01, swap=("person", "forklift", 0.05))
GOOD = Labels(miss=0.01)
STORY_SEEDS = range(3100, 3130)  # not the seeds the margins or the simulation were looked at on


def fleet(seed: int, labels: Labels, n: int = 10) -> ShadowFleet:
    return ShadowFleet(unlike_devices(n, seed, bad_camera=seed % 2 == 1), seed, labels, swing_period_s=7200.0)


def test_the_words_say_estimate_bound_minimum_and_the_pairs() -> None:
    v = Verdict(
        "shadow_agreement",
        "worse",
        0.951,
        None,
        0.97,
        {"frames": 5000},
        "person->car 31",
        lower=0.94,
        upper=0.962,
    )
    assert say(v) == "agreement 95.1 % (at most 96.2 %), minimum 97.0 %: worse; person->car 31"
    v = Verdict("shadow_class_agreement:spill", "no_worse", 0.99, None, 0.9, {}, "", lower=0.95, upper=1.0)
    assert say(v) == "agreement on class 'spill' 99.0 % (at least 95.0 %), minimum 90.0 %: no worse"
    assert BY_NAME["shadow_agreement"].stage == "shadow"


def _shadow_run(seed: int, labels: Labels, settings: GateSettings = SITE, windows: int = 90):  # type: ignore[no-untyped-def]
    site = fleet(seed, labels)
    limits = dataclasses.replace(LIMITS, site=settings)
    state = opened(site, settings)
    assert state.stage == Stage.SHADOW
    return drive(state, site, limits, same, windows=windows, until=lambda s: s.stage != Stage.SHADOW)


def test_a_candidate_that_swaps_two_classes_is_halted_in_shadow_before_anyone_switches() -> None:
    times: list[float] = []
    for seed in STORY_SEEDS:
        state, made = _shadow_run(seed, SWAP)
        if state.stage != Stage.HALTED:
            continue
        halt = made[-1]
        assert halt.action == Action.HALT and halt.stage == Stage.HALTED
        assert "shadow_agreement" in halt.reason, halt.reason
        assert not any(d.action == Action.ADVANCE for d in made)  # it never left the shadow stage
        assert not state.ran and not state.rollback_set  # nobody switched, so nobody goes back
        v = verdict(halt, "shadow_agreement")
        assert v.candidate is not None and v.upper is not None and v.candidate < v.upper < 0.97
        assert v.e_value is not None and v.e_value >= 1 and v.samples["frames"] > 0
        assert "person->forklift" in v.note and "forklift->person" in v.note
        times.append(halt.at - state.decisions[0].at)
    share = len(times) / len(STORY_SEEDS)
    print(f"\nswap 5 %: halted in shadow in {share:.0%} of {len(STORY_SEEDS)} seeds, median "
          f"{statistics.median(times) / 60:.0f} min (min {min(times) / 60:.0f}, max {max(times) / 60:.0f})")  # fmt: skip
    assert share >= 0.95


def test_without_the_agreement_rows_the_same_swap_passes_shadow() -> None:
    """The control: on metrics alone (latency, CPU, class shares) the swap is invisible."""
    blind = dataclasses.replace(SITE, dry_run=("shadow_agreement", "shadow_class_agreement"))
    passed = 0
    for seed in list(STORY_SEEDS)[:6]:
        state, made = _shadow_run(seed, SWAP, blind)
        passed += state.stage == Stage.WAVES
        assert any(d.action == Action.OBSERVE and "shadow_agreement" in d.reason for d in made)
    assert passed >= 5


def test_a_rare_class_swapped_is_seen_by_its_own_row() -> None:
    """Spill is 1 % of frames: relabelling 60 % of it as forklift moves the overall agreement by
    0.6 points (still above 97 %), and its own row halts it."""
    rare = Labels(miss=0.01, relabel=("spill", "forklift", 0.6))
    halted = 0
    for seed in list(STORY_SEEDS)[:10]:
        state, made = _shadow_run(seed, rare, windows=120)
        if state.stage == Stage.HALTED:
            halted += 1
            assert "shadow_class_agreement:spill" in made[-1].reason, made[-1].reason
            assert "shadow_agreement," not in made[-1].reason + ","
            assert "spill->forklift" in verdict(made[-1], "shadow_class_agreement:spill").note
    assert halted >= 9


def test_a_good_candidate_passes_shadow_and_its_state_keeps_the_pairs() -> None:
    passed, times = 0, []
    for seed in list(STORY_SEEDS)[:20]:
        state, made = _shadow_run(seed, GOOD)
        if state.stage == Stage.WAVES:
            passed += 1
            times.append(made[-1].at - state.decisions[0].at)
            v = verdict(made[-1], "shadow_agreement")
            assert v.result == "no_worse" and v.candidate is not None and v.candidate > 0.97
            assert made[-1].reason == "shadow stage passed: wave 1 switches to the candidate"
        assert state_from_json(state_to_json(state)).confusion == state.confusion  # kept across restarts
    print(
        f"\ngood candidate: passed shadow in {passed} of 20 seeds, median {statistics.median(times) / 60:.0f} min"
    )
    assert passed >= 19
    assert min(times) >= SITE.soak_min_s - WINDOW_S


NULL_SEEDS = range(5000, 5200)  # 200 seeds, never looked at while writing the rows
NULL_WINDOWS = 90  # an hour and a half of looks, one a minute
ALL_LOOKS = dataclasses.replace(SITE, approve_each_wave=True, false_halt_rate=0.9)  # the stage never ends


def _row_alpha(state, settings: GateSettings, row: str) -> float:  # type: ignore[no-untyped-def]
    from gateway.core.gates.criteria import rows

    judged = rows(state, dataclasses.replace(LIMITS, site=settings))
    # the row's share of the rate: equal shares here; by the rows' weights where the table has them
    weight = {c.name: float(getattr(c, "weight", 1.0)) for c in judged}
    alpha = settings.false_halt_rate * weight[row] / sum(weight.values())
    return alpha / len(state.classes) if row == "shadow_class_agreement" else alpha


def _null(labels: Labels, row: str) -> tuple[int, float]:
    """Halts by ``row`` of a candidate exactly at its margin, over NULL_SEEDS, and the row's rate."""
    limits = dataclasses.replace(LIMITS, site=ALL_LOOKS)
    halted, alpha = 0, 0.0
    for seed in NULL_SEEDS:
        site = fleet(seed, labels, n=4)
        state = opened(site, ALL_LOOKS, history=15)
        site.center(state.admitted)
        alpha = _row_alpha(state, ALL_LOOKS, row)
        state, made = drive(
            state, site, limits, same, windows=NULL_WINDOWS, until=lambda s: s.stage != Stage.SHADOW
        )
        halted += state.stage == Stage.HALTED and f"({row}" in made[-1].reason
    return halted, alpha


def _allowed(alpha: float, n: int) -> float:
    return alpha + 2 * (alpha * (1 - alpha) / n) ** 0.5


@pytest.mark.timeout(900)  # 200 seeds of 90 looks
@pytest.mark.slow
def test_false_halts_of_a_candidate_at_the_overall_minimum_stay_within_the_rows_rate() -> None:
    """Agreement exactly 97 % on the devices judged, varying by device and by window: the overall
    row halts it at most at its share of the false-halt rate, however often it looks."""
    halted, alpha = _null(Labels(miss=0.03), "shadow_agreement")
    share = halted / len(NULL_SEEDS)
    print(f"\nnull at 97 %: {halted} of {len(NULL_SEEDS)} halted, the row's rate {alpha:.3f}")
    assert share <= _allowed(alpha, len(NULL_SEEDS))


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_false_halts_of_a_sparse_class_at_its_minimum_stay_within_the_rows_rate() -> None:
    """Spill (1 % of frames, a few a window) agreed on exactly 90 % of its frames."""
    halted, alpha = _null(Labels(miss=0.0, relabel=("spill", "forklift", 0.10)), "shadow_class_agreement")
    share = halted / len(NULL_SEEDS)
    print(f"\nnull spill at 90 %: {halted} of {len(NULL_SEEDS)} halted, the row's rate {alpha:.3f}")
    assert share <= _allowed(alpha, len(NULL_SEEDS))


@pytest.mark.parametrize("key", ["shadow_agreement_min", "shadow_agreement_class_min"])
@pytest.mark.parametrize("value", ["1.5", "-0.1", '"high"'])
def test_a_bad_minimum_stops_start_up_with_one_line(tmp_path, key: str, value: str) -> None:  # type: ignore[no-untyped-def]
    from gateway.core.errors import ConfigError
    from gateway.service import settings as loader

    f = tmp_path / "gateway.toml"
    f.write_text(f"[gates]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as err:
        loader.load(f, environ={})
    line = str(err.value)
    assert "\n" not in line and str(f) in line and f"gates.{key}" in line


@pytest.mark.timeout(900)
@pytest.mark.slow
def test_false_halts_of_a_good_candidate_in_shadow_stay_within_the_stated_rate() -> None:
    """The whole gate in shadow (every row, the agreement rows among them) at the defaults: a good
    candidate (1 % random disagreement, the same metrics) over 200 seeds and 90 looks each.

    The manifest's max_error_rate is left out, as in test_criteria's bad-camera test: the bad camera's
    own rate is past that absolute limit on any version, so that row halting is right, not false."""
    settings = dataclasses.replace(SITE, approve_each_wave=True)  # the stage never ends: every look
    limits = GateLimits.of(HealthChecks(max_cpu_percent=80, warmup_inferences=10), settings)
    halted: list[str] = []
    for seed in NULL_SEEDS:
        site = fleet(seed + 1000, GOOD, n=4)
        state = opened(site, settings, history=15)
        state, made = drive(state, site, limits, same, windows=NULL_WINDOWS, until=lambda s: s.stopped)
        if state.stage == Stage.HALTED:
            halted.append(made[-1].reason)
    share = len(halted) / len(NULL_SEEDS)
    print(f"\ngood candidate in shadow: {len(halted)} of {len(NULL_SEEDS)} halted {halted[:3]}")
    assert share <= _allowed(settings.false_halt_rate, len(NULL_SEEDS))
