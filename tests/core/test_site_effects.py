"""The effects a site transition returns as values (:mod:`gateway.core.site_effects`): pure, values
in and effects out. The transition that decided says what follows, in the order the shell carries it
out: durable (Persist, Journal) before Publish, then pins, wake-ups and each rollback notice with
its recipients and JSON. No shell here: the keeper and the site loop only carry these out."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from typing import Any

import pytest

from gateway.core import site as S
from gateway.core import site_effects as E
from gateway.core.device import DeviceRecord
from gateway.core.gates import Action, Control, Event
from gateway.core.manifest import Deployment, parse_deployment
from gateway.core.settings import GateSettings

SETTINGS = GateSettings(
    waves=(5.0, 25.0, 100.0), min_devices_per_wave=2, soak_min_s=300.0, min_samples=4, silence_after_s=180.0
)


def manifest(version: str) -> Deployment:
    return parse_deployment(
        {
            "model_id": "detector",
            "version": version,
            "artifact_url": f"artifacts/detector/{version}/model.bin",
            "signature_url": f"artifacts/detector/{version}/model.bin.sig",
            "sha256": hashlib.sha256(version.encode()).hexdigest(),
            "length": 1000,
        }
    )


V1, V2 = manifest("1.0.0"), manifest("2.0.0")


def devices(n: int, version: str | None = "1.0.0") -> list[DeviceRecord]:
    return [
        DeviceRecord(f"d{i:02d}", {"hw": "rev1"}, model_id="detector", model_version=version)
        for i in range(n)
    ]


def apply(site: S.Site, version: int, deployments: tuple[Deployment, ...], devs: list[DeviceRecord]) -> Any:
    return S.apply_index(
        site,
        index_version=version,
        deployments=deployments,
        commands={},
        now=100.0,
        settings=SETTINGS,
        verified=lambda _sha: True,
        devices=devs,
        matrix=None,
    )


def control(site: S.Site, action: str, devs: list[DeviceRecord], key: str = V2.key) -> Any:
    return S.on_control(
        site,
        key,
        Control(action, "operator:ana", "test"),
        now=200.0,
        settings=SETTINGS,
        devices=devs,
        matrix=None,
    )


def kinds(effects: E.Effects) -> list[type]:
    return [type(s) for s in effects.steps]


def running_candidate(site: S.Site, devs: list[DeviceRecord]) -> list[DeviceRecord]:
    """The devices of ``devs``, those admitted to the candidate now running it."""
    admitted = site.gates[V2.key].admitted
    return [dataclasses.replace(d, model_version="2.0.0") if d.device_id in admitted else d for d in devs]


def test_a_judged_index_is_made_durable_then_published_then_the_polls_and_uplink_are_woken() -> None:
    site, effects = apply(S.Site(), 1, (V1,), devices(40))
    assert kinds(effects) == [
        E.Persist,
        E.Journal,
        E.Publish,
        E.PinRollbackTargets,
        E.WakePolls,
        E.WakeUplink,
    ]
    persist, journal, publish = effects.steps[:3]
    assert persist.site is site and publish.site is site
    assert [d.action for d in journal.decisions] == [Action.OPEN] and persist.decisions == journal.decisions
    assert effects.decisions == journal.decisions and effects.changed


def test_a_transition_that_changes_nothing_has_no_effects() -> None:
    site, _ = apply(S.Site(), 2, (V1, V2), devices(40))
    again, effects = apply(site, 2, (V1,), devices(40))
    assert again is site and effects == E.Effects() and not effects.changed and not effects.decisions


def test_a_tick_that_only_gathered_nothing_publishes_without_writing_or_waking() -> None:
    site, _ = apply(S.Site(), 1, (V1,), devices(40))
    site, effects = S.tick(
        site, now=100.0, settings=SETTINGS, windows=(), events=(), devices=devices(40), matrix=None
    )
    assert kinds(effects) == [E.Publish, E.PinRollbackTargets]
    assert effects.steps[0] == E.Publish(site)


def test_an_abort_names_who_must_roll_back_and_the_notice_they_are_sent() -> None:
    site, _ = apply(S.Site(), 1, (V1,), devices(40))
    site, _ = apply(site, 2, (V1, V2), devices(40))
    devs = running_candidate(site, devices(40))
    on_it = sorted(d.device_id for d in devs if d.model_version == "2.0.0")
    assert len(on_it) == 2
    site, effects = control(site, "abort", devs)
    assert kinds(effects) == [
        E.Persist,
        E.Journal,
        E.Publish,
        E.PinRollbackTargets,
        E.WakePolls,
        E.WakeUplink,
        E.Notify,
    ]
    notice = effects.steps[-1]
    assert isinstance(notice, E.Notify)
    assert list(notice.recipients) == on_it
    assert json.loads(notice.payload) == {
        "rollback": True,
        "model_id": "detector",
        "version": "1.0.0",
        "poll": True,
    }
    assert notice.payload == json.dumps(json.loads(notice.payload)).encode()  # the notice's bytes, as sent
    assert notice.topic(on_it[0]) == f"devices/{on_it[0]}/updates"
    assert effects.steps[3] == E.PinRollbackTargets({V2.key: V1}, (V2.key,))


def test_a_halted_first_version_sends_its_devices_back_to_their_previous_slot() -> None:
    site, _ = apply(S.Site(), 1, (V2,), devices(40, None))
    devs = running_candidate(site, devices(40, None))
    site, effects = control(site, "abort", devs)
    (notice,) = [s for s in effects.steps if isinstance(s, E.Notify)]
    assert json.loads(notice.payload) == {
        "rollback": True,
        "model_id": "detector",
        "version": None,
        "poll": True,
        "previous_slot": True,
    }
    assert sorted(notice.recipients) == sorted(site.gates[V2.key].admitted)


def test_a_hold_tells_no_device_to_roll_back() -> None:
    site, _ = apply(S.Site(), 1, (V1,), devices(40))
    site, _ = apply(site, 2, (V1, V2), devices(40))
    site, effects = control(site, "hold", running_candidate(site, devices(40)))
    assert [d.action for d in effects.decisions] == [Action.HOLD]
    assert E.Notify not in kinds(effects) and effects.changed


def test_devices_that_ran_a_version_before_its_gate_are_not_told_to_roll_back() -> None:
    site, _ = apply(S.Site(), 1, (V2,), devices(10, "2.0.0"))  # every device ran it already
    site, effects = control(site, "abort", devices(10, "2.0.0"))
    assert [d.action for d in effects.decisions] == [Action.ABORT]
    assert E.Notify not in kinds(effects)


def step_at_random(rng: random.Random, site: S.Site, devs: list[DeviceRecord], now: float) -> Any:
    """One random transition: an operator's control, a tick with random device events, or a poll's
    admission. None when the control was refused."""
    gate = site.gates[V2.key]
    roll = rng.random()
    if roll < 0.3:
        action = rng.choice([Action.HOLD, Action.RELEASE, Action.ABORT, Action.APPROVE])
        try:
            return S.on_control(
                site,
                V2.key,
                Control(action, "operator:ana", ""),
                now=now,
                settings=SETTINGS,
                devices=devs,
                matrix=None,
            )
        except S.ControlRefused:
            return None
    if roll < 0.5:
        device = rng.choice(devs)
        return S.admit_on_poll(site, V2.key, device, now=now, settings=SETTINGS, devices=devs, matrix=None)
    events = [
        Event(d, rng.choice(["downloaded", "activated", "rolled_back", "failed"]), "2.0.0")
        for d in gate.admitted
        if rng.random() < 0.4
    ]
    return S.tick(site, now=now, settings=SETTINGS, windows=(), events=events, devices=devs, matrix=None)


@pytest.mark.parametrize("seed", [3, 17, 29, 41, 58, 73])
def test_every_transition_keeps_the_order_and_notifies_exactly_who_must_go_back(seed: int) -> None:
    """Random sites, controls, device events and polls: durable before published, published before
    anything else, a journal exactly when there are decisions, and after a halt or an abort (only
    then) a notice to exactly the devices the published value sends back, with its target."""
    rng = random.Random(seed)
    devs = devices(rng.randint(10, 80))
    site, _ = apply(S.Site(), 1, (V1,), devs)
    site, _ = apply(site, 2, (V1, V2), devs)
    now, notices = 100.0, 0
    for _ in range(40):
        now += rng.uniform(5.0, 200.0)
        admitted = site.gates[V2.key].admitted
        devs = [
            dataclasses.replace(d, model_version=rng.choice(["1.0.0", "2.0.0"]))
            if d.device_id in admitted
            else d
            for d in devs
        ]
        before = site
        out = step_at_random(rng, site, devs, now)
        if out is None:
            continue
        site, effects = out
        order = kinds(effects)
        if site is before:
            assert order == []
            continue
        publish = order.index(E.Publish)
        assert set(order[:publish]) <= {E.Persist, E.Journal} and order.count(E.Publish) == 1
        assert (E.Journal in order) == bool(effects.decisions) == (E.WakeUplink in order)
        assert (E.Persist in order) >= bool(effects.decisions)
        told = {
            i: json.loads(s.payload) for s in effects.steps if isinstance(s, E.Notify) for i in s.recipients
        }
        notices += len(told)
        if not any(d.action in E.STOP_ACTIONS for d in effects.decisions):
            assert told == {}
            continue
        for d in devs:
            back = S.rollback_for(site, d)
            assert (d.device_id in told) == (back is not None)
            if back is not None:
                assert told[d.device_id]["version"] == (back.to.version if back.to else None)
    print(f"seed {seed}: {notices} devices told to roll back")
