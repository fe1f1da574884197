"""The site's pure rollout transitions: judged in the same step as the index, fail closed, every
version gated, silence and invalid metrics, dry run, approval, truthful controls, restarts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.core import policy
from gateway.core import site as S
from gateway.core.aggregate import Aggregator
from gateway.core.device import DeviceRecord
from gateway.core.errors import ConfigError
from gateway.core.gates import Action, Control, Stage
from gateway.core.metrics import Sample
from gateway.rollout.keeper import GateKeeper
from gateway.service.settings import load
from tests.rollout.sim import DEFAULT_SETTINGS, manifest

V1, V2 = manifest("1.0.0"), manifest("2.0.0")
SETTINGS = dataclasses.replace(DEFAULT_SETTINGS, min_samples=4)


def devices(n: int, version: str | None = "1.0.0") -> list[DeviceRecord]:
    return [
        DeviceRecord(f"d{i:02d}", {"hw": "rev1"}, model_id="detector", model_version=version)
        for i in range(n)
    ]


def apply(
    site: S.Site,
    version: int,
    deployments: tuple,
    commands: dict | None = None,
    *,
    settings=SETTINGS,
    devs=None,
    verified=None,
):  # type: ignore[no-untyped-def]
    return S.apply_index(
        site,
        index_version=version,
        deployments=deployments,
        commands=commands or {},
        now=100.0,
        settings=settings,
        verified=verified or {V1.sha256, V2.sha256}.__contains__,
        devices=devs if devs is not None else devices(40),
        matrix=None,
    )


def answer(site: S.Site, dev: DeviceRecord) -> policy.PollAnswer:
    return policy.answer(
        deployments=site.deployments,
        commands=site.commands,
        device=dev,
        now=100.0,
        clock_trusted=True,
        verified=lambda _s: True,
        gates=S.GatesView(site),
    )


def test_every_deployment_is_judged_in_the_step_that_puts_the_index_in_effect() -> None:
    site, effects = apply(S.Site(), 1, (V1,))
    site, effects = apply(site, 2, (V1, V2))
    assert all(site.judged(d.key) for d in site.deployments)
    gate = site.gates[V2.key]
    assert gate.baseline_version == "1.0.0" and site.baselines[V2.key] == V1
    assert [d.action for d in effects.decisions] == [Action.OPEN]
    offered = [d.device_id for d in devices(40) if answer(site, d).deployment == V2]
    assert sorted(offered) == sorted(gate.admitted) and len(offered) == 2  # 1% of 40, at least 2
    reasons = {answer(site, d).reason for d in devices(40) if d.device_id not in gate.admitted}
    assert reasons == {"waiting_for_wave"}


def test_a_deployment_without_a_judgement_is_offered_to_nobody() -> None:
    site = S.Site(deployments=(V2,))  # in effect but never judged: only a bug could make this
    assert {answer(site, d).reason for d in devices(10)} == {"waiting_for_wave"}


def test_an_older_or_repeated_index_changes_nothing() -> None:
    site, _ = apply(S.Site(), 2, (V1, V2))
    again, effects = apply(site, 2, (V1,))
    older, _ = apply(site, 1, (V1,))
    assert again is site and older is site and not effects.decisions


def test_a_models_first_version_is_gated_unless_the_site_opts_out() -> None:
    site, _ = apply(S.Site(), 1, (V2,), devs=devices(40, None))
    gate = site.gates[V2.key]
    assert gate.baseline_version is None and len(gate.admitted) == 2
    opened, _ = apply(S.Site(), 1, (V2,), settings=dataclasses.replace(SETTINGS, first_version="open"))
    assert V2.key in opened.ungated and all(answer(opened, d).deployment == V2 for d in devices(5, None))
    off, _ = apply(S.Site(), 1, (V1, V2), settings=dataclasses.replace(SETTINGS, enabled=False))
    assert off.ungated == {V1.key, V2.key} and not off.gates


def test_devices_already_on_a_version_are_not_its_gates_to_roll_back() -> None:
    site, _ = apply(S.Site(), 1, (V1,), devs=devices(10, "1.0.0"))
    gate = site.gates[V1.key]
    assert gate.preexisting == {d.device_id for d in devices(10)}
    halted = dataclasses.replace(gate, stage=Stage.HALTED, ran=frozenset(gate.admitted))
    site = dataclasses.replace(site, gates={V1.key: halted})
    assert all(S.rollback_for(site, d) is None for d in devices(10))


def test_a_halted_first_version_sends_its_devices_back_to_their_previous_slot() -> None:
    site, _ = apply(S.Site(), 1, (V2,), devs=devices(40, None))
    gate = site.gates[V2.key]
    ran = sorted(gate.admitted)
    site = dataclasses.replace(
        site, gates={V2.key: dataclasses.replace(gate, stage=Stage.HALTED, ran=frozenset(ran))}
    )
    on_it = DeviceRecord(ran[0], {}, model_id="detector", model_version="2.0.0")
    a = answer(site, on_it)
    assert a.deployment is None and a.reason == "rollback_previous_slot" and a.rollback
    others = [d for d in devices(40, None) if d.device_id not in ran]
    assert {answer(site, d).reason for d in others} == {"halted_at_site"}


def test_coordinator_commands_apply_in_the_same_step_and_a_cleared_one_never_releases_a_halt() -> None:
    site, _ = apply(S.Site(), 1, (V1, V2))
    site, effects = apply(site, 2, (V1, V2), {V2.key: "paused"})
    assert site.gates[V2.key].held_by == "cloud" and [d.action for d in effects.decisions] == [Action.HOLD]
    assert {answer(site, d).reason for d in devices(40)} <= {"held_by_cloud", "up_to_date"}
    halted = dataclasses.replace(site.gates[V2.key], stage=Stage.HALTED)
    site = dataclasses.replace(site, gates={**site.gates, V2.key: halted})
    site, effects = apply(site, 3, (V1, V2), {})
    assert site.gates[V2.key].stage == Stage.HALTED and not effects.decisions
    site, effects = apply(site, 4, (V1, V2), {"detector": "aborted"})
    assert site.gates[V2.key].stage == Stage.ABORTED


def test_controls_apply_at_once_and_say_why_when_they_would_do_nothing() -> None:
    site, _ = apply(S.Site(), 1, (V1, V2))

    def control(site: S.Site, action: str) -> S.Site:
        return S.on_control(
            site, V2.key, Control(action, "operator:ana", "why"), now=200.0, settings=SETTINGS,
            devices=devices(40), matrix=None,
        )[0]  # fmt: skip

    with pytest.raises(S.ControlRefused, match="not held or halted"):
        control(site, "release")
    with pytest.raises(S.ControlRefused, match="not waiting for approval"):
        control(site, "approve")
    held = control(site, "hold")
    with pytest.raises(S.ControlRefused, match="already held"):
        control(held, "hold")
    aborted = control(held, "abort")
    assert {answer(aborted, d).reason for d in devices(40)} == {"halted_at_site"}
    with pytest.raises(S.ControlRefused, match="abort is final"):
        control(aborted, "release")
    with pytest.raises(KeyError):
        S.on_control(
            site, "detector@9", Control("hold", "x"), now=0, settings=SETTINGS, devices=[], matrix=None
        )


def test_a_changed_artifact_restarts_the_waves_evidence_and_keeps_who_is_admitted() -> None:
    site, _ = apply(S.Site(), 1, (V1, V2))
    admitted = site.gates[V2.key].admitted
    other = dataclasses.replace(V2, sha256="ab" * 32)
    site, effects = apply(site, 2, (V1, other))
    gate = site.gates[V2.key]
    assert gate.sha256 == other.sha256 and gate.admitted == admitted
    assert [d.action for d in effects.decisions] == [Action.CHANGED]


def test_gate_state_survives_a_restart_and_is_not_judged_again(tmp_path: Path) -> None:
    site, effects = apply(S.Site(), 1, (V1, V2))
    keeper = GateKeeper(SETTINGS, tmp_path)
    keeper.store.save(site.gates, effects.decisions, keeper._meta(site))
    again = GateKeeper(SETTINGS, tmp_path)
    again.load()
    reloaded, effects = apply(again.site, 1, (V1, V2), devs=devices(40)[::-1])
    assert not effects.decisions
    assert reloaded.gates[V2.key].admitted == site.gates[V2.key].admitted


# The criteria that need no baseline (a first version): tests/core/gates/test_first_version.py.


# -- inputs: invalid metrics, the manifest, the settings ----------------------------------------


def test_invalid_messages_are_counted_on_the_version_the_device_runs() -> None:
    agg = Aggregator(60.0, "hw")
    agg.add_invalid("d1", "detector", "2.0.0", {"hw": "rev1"}, 10.0)
    agg.add(Sample("d2", 11.0, "detector", "2.0.0", 5, 0, 40.0, None, None), {"hw": "rev1"})
    (w,) = agg.close_due(60.0)
    assert w.invalid == 1 and w.device_invalid == {"d1": 1} and w.samples == 1 and w.devices == 1


def test_dry_run_names_are_checked_at_start_up(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[gates]\ndry_run = ["max_cpu"]\n')
    with pytest.raises(ConfigError, match=r"gates\.dry_run"):
        load(cfg, environ={})
    cfg.write_text('[gates]\ndry_run = ["max_cpu_percent", "class:spill"]\n')
    assert load(cfg, environ={}).gates.dry_run == ("max_cpu_percent", "class:spill")
