"""Canary gates: waves, each criterion, controls, persistence, and the article's stories simulated."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.core.errors import DamagedStateError
from gateway.core.gates import Control, Event, GateLimits, evaluate, new_gate, step
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings
from gateway.core.waves import admit, wave_target
from gateway.core.window import GroupKey, WindowStats
from gateway.rollout.gate_store import GateStore
from gateway.rollout.keeper import GateKeeper
from tests.rollout.sim import run

SITE = GateSettings(
    min_devices_per_wave=1, soak_min_s=120.0, min_devices=2, min_samples=4, min_inferences=100
)
LIMITS = GateLimits.of(HealthChecks(max_cpu_percent=80, max_error_rate=0.05, warmup_inferences=10), SITE)
ELIGIBLE = {f"d{i}": {"hw": ("rev1", "rev2")[i % 2]} for i in range(100)}


def window(version: str, start: float, devices: list[str], **figures: object) -> WindowStats:
    base: dict[str, object] = {
        "samples": 2 * len(devices), "inferences": 100 * len(devices), "errors": 0, "error_rate": 0.0,
        "latency_p50_ms": 40.0, "latency_p95_ms": 60.0, "latency_p99_ms": 80.0, "cpu_mean": 30.0, "cpu_max": 40.0,
        "ram_mean": 40.0, "ram_max": 45.0, "temp_mean_c": 50.0, "temp_max_c": 55.0,
        "class_counts": {"person": 99 * len(devices), "spill": len(devices)}, "mean_confidence": 0.8, "unknown_rate": 0.01,
    }  # fmt: skip
    base.update(figures)
    return WindowStats(
        key=GroupKey("detector", version, "rev1"),
        start=start,
        end=start + 60,
        devices=len(devices),
        device_inferences={d: 100 for d in devices},
        **base,  # type: ignore[arg-type]
    )


def started(now: float = 0.0):  # type: ignore[no-untyped-def]
    state = new_gate("detector@2.0.0", "detector", "2.0.0", "1.0.0", SITE, now)
    state, decisions = step(state, now=now, limits=LIMITS, eligible=ELIGIBLE)
    assert [d.action for d in decisions] == ["open"]
    return state


def test_waves_are_sticky_ordered_and_deterministic() -> None:
    assert [wave_target((1, 5, 10, 25, 50, 100), k, 200, 2) for k in range(6)] == [2, 10, 20, 50, 100, 200]
    first = admit("m@2", ELIGIBLE, [], (1, 5, 100), 0, min_devices=1, order_attr="")
    assert first == admit("m@2", ELIGIBLE, [], (1, 5, 100), 0, min_devices=1, order_attr="")
    second = admit("m@2", ELIGIBLE, first, (1, 5, 100), 1, min_devices=1, order_attr="")
    assert len(first) + len(second) == 5
    assert not set(first) & set(second)
    by_hw = admit("m@2", ELIGIBLE, [], (50, 100), 0, min_devices=1, order_attr="hw")
    assert {ELIGIBLE[d]["hw"] for d in by_hw} == {"rev1"}  # one hardware revision first
    joined = {**ELIGIBLE, "late": {"hw": "rev1"}}
    again = admit("m@2", joined, [*first, *second], (1, 5, 100), 1, min_devices=1, order_attr="")
    assert all(d not in first and d not in second for d in again)  # nobody admitted moves


@pytest.mark.parametrize(
    ("figures", "criterion"),
    [
        ({"cpu_mean": 85.0}, "max_cpu_percent"),
        ({"cpu_mean": 55.0}, "cpu_rise_percent"),
        ({"errors": 20, "error_rate": 0.1}, "max_error_rate"),
        ({"errors": 3, "error_rate": 0.03}, "error_rate_rise"),
        ({"latency_p50_ms": 90.0}, "latency_ratio"),
        ({"temp_max_c": 95.0}, "max_temperature_c"),
        ({"temp_mean_c": 65.0}, "temperature_rise_c"),
        ({"class_counts": {"person": 2000}}, "class:spill"),
        ({"unknown_rate": 0.2}, "unknown_rate"),
        ({"mean_confidence": 0.6}, "confidence_drop"),
    ],
)
def test_each_criterion_halts_with_its_evidence(figures: dict[str, object], criterion: str) -> None:
    state = started()
    devs = [*list(state.admitted)[:1], "d99"]
    cand = window("2.0.0", 0, devs, **figures)
    base = window("1.0.0", 0, ["d50", "d51", "d52"])
    state, decisions = step(state, now=60, limits=LIMITS, eligible=ELIGIBLE, windows=[cand, base])
    assert state.stage == "halted"
    verdict = next(v for v in decisions[-1].verdicts if v.criterion == criterion)
    assert verdict.result == "fail"
    assert verdict.samples  # figures and sample sizes go with it
    assert criterion in decisions[-1].reason


def test_no_verdict_on_too_little_data() -> None:
    state = started()
    cand = window("2.0.0", 0, ["d1"], cpu_mean=99.0, samples=1)
    state, decisions = step(state, now=60, limits=LIMITS, eligible=ELIGIBLE, windows=[cand])
    assert state.stage == "waves"
    assert not decisions
    verdict = next(v for v in evaluate(state, LIMITS) if v.criterion == "max_cpu_percent")
    assert verdict.result == "insufficient"
    assert verdict.samples["devices"] == 1


def test_soak_and_warmup_before_advancing_then_done() -> None:
    state = started()
    wave0 = [d for d, w in state.admitted.items() if w == 0]
    devs = [*wave0, "d98", "d99"]
    state, decisions = step(
        state,
        now=60,
        limits=LIMITS,
        eligible=ELIGIBLE,
        windows=[window("2.0.0", 0, devs), window("1.0.0", 0, ["d50", "d51"])],
    )
    assert not decisions  # soak not over
    state, decisions = step(
        state,
        now=130,
        limits=LIMITS,
        eligible=ELIGIBLE,
        windows=[window("2.0.0", 60, devs), window("1.0.0", 60, ["d50", "d51"])],
    )
    assert [d.action for d in decisions] == ["advance"]
    assert state.wave == 1


def test_install_failures_count_only_after_download() -> None:
    state = started()
    d0 = next(iter(state.admitted))
    events = [Event(d0, "failed", "2.0.0")]  # a download that timed out: not the model's fault
    state, _ = step(state, now=10, limits=LIMITS, eligible=ELIGIBLE, events=events)
    assert d0 not in state.failed
    state, _ = step(
        state,
        now=20,
        limits=LIMITS,
        eligible=ELIGIBLE,
        events=[Event(d0, "downloaded", "2.0.0"), Event(d0, "failed", "2.0.0")],
    )
    assert d0 in state.failed


def test_controls_hold_release_abort() -> None:
    state = started()
    state, decisions = step(
        state,
        now=10,
        limits=LIMITS,
        eligible=ELIGIBLE,
        controls=[Control("hold", "operator:ana", "line stop")],
    )
    assert state.held_by == "operator:ana"
    assert decisions[0].by == "operator:ana"
    state, decisions = step(
        state, now=20, limits=LIMITS, eligible=ELIGIBLE, controls=[Control("release", "cloud")]
    )
    assert state.held_by is None
    assert decisions[0].action == "release"
    ran = next(iter(state.admitted))
    state, _ = step(
        state, now=30, limits=LIMITS, eligible=ELIGIBLE, events=[Event(ran, "activated", "2.0.0")]
    )
    state, decisions = step(
        state,
        now=40,
        limits=LIMITS,
        eligible=ELIGIBLE,
        controls=[Control("abort", "cloud", "signed command")],
    )
    assert state.stage == "aborted"
    assert ran in state.rollback_set


def test_state_and_audit_survive_a_restart(tmp_path: Path) -> None:
    store = GateStore(tmp_path)
    state = started()
    (ran,) = state.admitted
    state, opened = step(
        state,
        now=10,
        limits=LIMITS,
        eligible=ELIGIBLE,
        windows=[window("2.0.0", 0, [ran]), window("1.0.0", 0, ["d50", "d51"])],
        events=[
            Event(ran, "downloaded", "2.0.0"),
            Event(ran, "activated", "2.0.0"),
        ],
    )
    state, held = step(
        state, now=20, limits=LIMITS, eligible=ELIGIBLE, controls=[Control("hold", "operator:ana", "why not")]
    )
    # The fields hold something, so a field the store drops or mangles shows.
    assert state.held_by == "operator:ana"
    assert ran in state.ran
    assert ran in state.downloaded
    assert state.heard
    assert state.candidate.inferences > 0
    assert state.baseline.devices == {"d50", "d51"}
    assert len(state.decisions) >= 2
    store.save({state.deployment: state}, [*opened, *held])
    loaded = GateStore(tmp_path).load()
    assert list(loaded) == [state.deployment]
    assert loaded[state.deployment] == state
    for f in dataclasses.fields(state):  # names the field, should one differ
        assert getattr(loaded[state.deployment], f.name) == getattr(state, f.name), f.name
    audit = GateStore(tmp_path).audit()
    assert audit[-1]["action"] == "hold"
    assert audit[-1]["by"] == "operator:ana"


@pytest.mark.parametrize("story", ["cpu_spike", "missing_class", "runtime_errors"])
def test_bad_models_halt_in_the_first_wave_and_roll_back(story: str) -> None:
    r = run(story, seed=7)
    assert r.stage == "halted", r.decisions
    assert r.ever_ran_candidate <= r.first_wave_size
    assert r.windows_to_halt is not None
    assert r.windows_to_halt <= 2 + 1  # +1: the minimum sample's window
    assert r.rolled_back == r.ever_ran_candidate


def test_network_timeouts_do_not_halt_and_do_not_rush_the_site() -> None:
    r = run("network_timeouts", seed=3)
    assert r.stage == "done", r.decisions
    assert r.max_admitted_in_one_step <= r.eligible // 2  # never the whole site at once


def test_a_good_model_reaches_everyone_without_a_false_halt() -> None:
    """25 seeded rollouts here; tests/bench/gate_stories.py counts false halts in 100."""
    halted = [seed for seed in range(25) if run("good", seed=seed, devices=100).stage != "done"]
    assert not halted


def test_shadow_stage_judges_the_candidate_before_anyone_switches() -> None:
    site = dataclasses.replace(SITE, shadow=True)
    limits = GateLimits.of(HealthChecks(warmup_inferences=10), site)
    state = new_gate("detector@2.0.0", "detector", "2.0.0", "1.0.0", site, 0.0)
    state, decisions = step(state, now=0, limits=limits, eligible=ELIGIBLE)
    assert state.stage == "shadow"
    assert decisions[0].action == "open"
    devs = [*state.admitted, "d99"]
    shadow = dataclasses.replace(
        window("2.0.0", 0, devs), key=GroupKey("detector", "2.0.0", "rev1", shadow=True)
    )
    active = window("1.0.0", 0, devs)
    state, _ = step(state, now=60, limits=limits, eligible=ELIGIBLE, windows=[shadow, active])
    assert state.stage == "shadow"
    assert not state.ran  # shadow metrics never count as running it
    shadow2 = dataclasses.replace(shadow, start=60, end=120)
    state, decisions = step(
        state, now=130, limits=limits, eligible=ELIGIBLE, windows=[shadow2, window("1.0.0", 60, devs)]
    )
    assert state.stage == "waves"
    assert decisions[-1].action == "advance"
    assert "shadow" in decisions[-1].reason
    bad = dataclasses.replace(shadow, cpu_mean=90.0)
    state = new_gate("detector@2.0.0", "detector", "2.0.0", "1.0.0", site, 0.0)
    state, _ = step(state, now=0, limits=limits, eligible=ELIGIBLE)
    state, decisions = step(state, now=60, limits=limits, eligible=ELIGIBLE, windows=[bad, active])
    assert state.stage == "halted"
    assert "cpu_rise_percent" in decisions[-1].reason
    assert not state.rollback_set


def _stored(tmp_path: Path) -> dict[str, Any]:
    store = GateStore(tmp_path)
    state = started()
    state, decisions = step(state, now=10, limits=LIMITS, eligible=ELIGIBLE)
    store.save(
        {state.deployment: state}, decisions, {"known": {}, "baselines": {}, "ungated": [], "cloud_held": []}
    )
    return dict(json.loads((tmp_path / "gates.json").read_text())["gates"][state.deployment])


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda g: g.pop("ran"), "missing key 'ran'"),
        (lambda g: g.update(colour="red"), "unknown key 'colour'"),
        (lambda g: g.update(wave="one"), "wave: expected int, found str"),
        (lambda g: g.update(admitted=["cam-1"]), "admitted: expected Mapping, found list"),
        (lambda g: g.update(candidate=None), "candidate: expected an object, found NoneType"),
        (lambda g: g.update(stage="flying"), "unknown stage 'flying'"),
        (lambda g: g["decisions"].append({"at": "noon"}), "decisions[1]: missing key 'deployment'"),
    ],
)
def test_a_mis_shaped_gate_file_is_a_clear_error_naming_the_key(
    tmp_path: Path, change: Callable[[dict[str, Any]], Any], says: str
) -> None:
    gate = _stored(tmp_path)
    change(gate)
    (tmp_path / "gates.json").write_text(json.dumps({"gates": {"m@1": gate}}))
    with pytest.raises(DamagedStateError, match=re.escape(says)) as err:
        GateStore(tmp_path).load()
    assert str(tmp_path / "gates.json") in str(err.value)


@pytest.mark.parametrize("name", ["gates.json", "gates-meta.json"])
def test_keeper_moves_a_damaged_file_aside_and_starts_in_safe_mode(tmp_path: Path, name: str) -> None:
    _stored(tmp_path)
    (tmp_path / name).write_bytes(b'{"gates": {"m@1": {"stage"')
    keeper = GateKeeper(SITE, tmp_path)
    keeper.load()
    assert keeper.site.safe_mode
    assert name in keeper.site.safe_mode
    (rec,) = keeper.recovered
    assert rec["file"] == str(tmp_path / name)
    assert "safe mode" in rec["action"]
    assert [p.name.startswith(name + ".corrupt-") for p in tmp_path.glob(f"{name}.corrupt-*")] == [True]
    healthy = GateKeeper(SITE, tmp_path / "elsewhere")
    healthy.load()
    assert healthy.site.safe_mode is None
    assert not healthy.recovered


def test_gates_json_missing_beside_its_meta_is_safe_mode_too(tmp_path: Path) -> None:
    keeper = GateKeeper(SITE, tmp_path)
    GateStore(tmp_path).save({}, [], {"known": {"m@1": {"model_id": "m"}}, "baselines": {}})
    (tmp_path / "gates.json").unlink()
    keeper.load()
    assert keeper.site.safe_mode
    assert "gates.json missing" in keeper.site.safe_mode


def test_a_gate_file_written_before_the_figures_merge_loads_and_judges_the_same(tmp_path: Path) -> None:
    """``data/gates-before-figures.json`` was written by the gates before their evidence became
    :class:`~gateway.core.figures.Figures` (it kept ``devices`` beside ``per_device``, and no
    ``cpu_max``): it loads, and the evidence it holds is judged exactly as it was when it halted."""
    (tmp_path / "gates.json").write_bytes(
        (Path(__file__).parent / "data" / "gates-before-figures.json").read_bytes()
    )
    gate = GateStore(tmp_path).load()["detector@2.0.0"]
    halt = gate.decisions[-1]
    assert (halt.action, halt.reason) == ("halt", "failed: invalid_metrics")
    assert evaluate(gate, LIMITS, halt.at) == list(halt.verdicts)
    assert sorted(gate.candidate.devices) == ["d52"]
    assert sorted(gate.baseline.devices) == ["d50", "d51"]
    GateStore(tmp_path).save({gate.deployment: gate}, [])
    assert GateStore(tmp_path).load()[gate.deployment] == gate
