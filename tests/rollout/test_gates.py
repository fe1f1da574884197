"""The gates' shells and the whole site: the gate store (state and audit on disk, strict reading,
old files), the keeper's recovery, and the site simulation's stories through the real transitions.
The pure gate (criteria, machine) is tested in tests/core/gates/."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.core.errors import DamagedStateError
from gateway.core.gates import Control, GateLimits, GateState, evaluate, step
from gateway.core.gates.sequential import Answer
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings
from gateway.rollout.gate_store import GateStore
from gateway.rollout.keeper import GateKeeper
from tests.core.gates.helpers import Fleet, drive, opened, same, unlike_devices
from tests.rollout.sim import DEFAULT_SETTINGS, run

SITE = GateSettings(min_devices_per_wave=2, soak_min_s=300.0, min_samples=4)
LIMITS = GateLimits.of(HealthChecks(max_cpu_percent=80, max_error_rate=0.05, warmup_inferences=10), SITE)


def started(seed: int = 1) -> tuple[GateState, Fleet]:
    """A gate with evidence in every field: levels, classes, streams, events, a control."""
    site = Fleet(unlike_devices(12, seed, bad_camera=True), seed, swing_period_s=7200.0)
    return opened(site, SITE), site


def test_state_and_audit_survive_a_restart(tmp_path: Path) -> None:
    store = GateStore(tmp_path)
    state, site = started()
    state, _ = drive(state, site, LIMITS, same, windows=3)
    state, _ = step(
        state,
        now=200,
        limits=LIMITS,
        eligible=site.eligible,
        controls=[Control("hold", "operator:ana", "why not")],
    )
    # The fields hold something, so a field the store drops or mangles shows.
    assert state.held_by == "operator:ana"
    assert state.ran == state.downloaded == set(state.admitted)
    assert state.heard
    assert state.candidate.inferences > 0 and len(state.baseline.devices) == 12 - len(state.admitted)
    assert state.reference and state.classes and state.streams
    assert all(s.lever and s.shared for k, s in state.streams.items() if k == "error_rate_rise")
    assert len(state.decisions) >= 2
    store.save({state.deployment: state}, [*state.decisions])
    loaded = GateStore(tmp_path).load()
    assert list(loaded) == [state.deployment]
    for f in dataclasses.fields(state):  # names the field, should one differ
        assert getattr(loaded[state.deployment], f.name) == getattr(state, f.name), f.name
    assert loaded[state.deployment] == state
    # and it judges the same after the restart, on the same evidence
    assert evaluate(loaded[state.deployment], LIMITS, 200) == evaluate(state, LIMITS, 200)
    audit = GateStore(tmp_path).audit()
    assert audit[-1]["action"] == "hold"
    assert audit[-1]["by"] == "operator:ana"


@pytest.mark.parametrize("seed", [7, 8])
@pytest.mark.parametrize("story", ["cpu_spike", "missing_class", "runtime_errors"])
def test_bad_models_halt_in_the_first_wave_and_roll_back(story: str, seed: int) -> None:
    r = run(story, seed=seed)
    assert r.stage == "halted", r.decisions
    assert r.ever_ran_candidate <= r.first_wave_size
    assert r.windows_to_halt is not None
    # as soon as each criterion has its minimum sample of windows (+1: the first is partial)
    assert r.windows_to_halt <= DEFAULT_SETTINGS.min_samples + 1
    assert r.rolled_back == r.ever_ran_candidate


def test_network_timeouts_do_not_halt_and_do_not_rush_the_site() -> None:
    r = run("network_timeouts", seed=3)
    assert r.stage == "done", r.decisions
    assert r.max_admitted_in_one_step <= r.eligible // 2  # never the whole site at once


@pytest.mark.parametrize(
    "seed", [*range(5), *(pytest.param(s, marks=pytest.mark.slow) for s in range(5, 25))]
)
def test_a_good_model_reaches_everyone_without_a_false_halt(seed: int) -> None:
    """25 seeded rollouts (one test each: each takes seconds; 5 in the README's command, the other
    20 in .ci/run's lane of pure simulations); tests/bench/gate_stories.py counts false halts in 100."""
    r = run("good", seed=seed, devices=100)
    assert r.stage == "done", r.decisions


def _stored(tmp_path: Path) -> dict[str, Any]:
    store = GateStore(tmp_path)
    state, site = started()
    state, decisions = drive(state, site, LIMITS, same, windows=2)
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


def test_a_gate_file_written_before_the_paired_evidence_loads_and_keeps_its_decision(tmp_path: Path) -> None:
    """``data/gates-before-figures.json`` was written by the fixed-threshold gates, before their
    evidence became :class:`~gateway.core.figures.Figures` (it kept ``devices`` beside
    ``per_device``, and no ``cpu_max``) and before levels and streams: it loads, its verdicts read
    back as the three answers, its halt stands (the new evidence is never made up from the old
    sums: every criterion judged from windows is undecided on it; the events still count), and it
    saves and loads unchanged."""
    (tmp_path / "gates.json").write_bytes(
        (Path(__file__).parent / "data" / "gates-before-figures.json").read_bytes()
    )
    gate = GateStore(tmp_path).load()["detector@2.0.0"]
    halt = gate.decisions[-1]
    assert (halt.action, halt.reason) == (
        "halt",
        "failed: invalid_metrics",
    )
    answers = {v.criterion: v.result for v in halt.verdicts}
    assert answers.pop("invalid_metrics") == Answer.WORSE  # "fail"
    assert set(answers.values()) == {Answer.UNDECIDED}  # "insufficient"
    assert sorted(gate.candidate.devices) == ["d52"]
    assert sorted(gate.baseline.devices) == ["d50", "d51"]
    assert not gate.reference and not gate.streams and not gate.classes
    from_windows = [
        v for v in evaluate(gate, LIMITS, halt.at) if v.criterion not in ("install_failures", "silence")
    ]
    assert from_windows and {v.result for v in from_windows} == {Answer.UNDECIDED}
    after, made = step(gate, now=halt.at + 60, limits=LIMITS, eligible={"d52": {}, "d50": {}, "d51": {}})
    assert after.stage == "halted" and not made
    GateStore(tmp_path).save({gate.deployment: gate}, [])
    assert GateStore(tmp_path).load()[gate.deployment] == gate
