"""The questions a poll asks of the site's published value (:mod:`gateway.core.site_state`), asked
by the core itself: the poll memo is handed the value and nothing else, and answers as the policy
does with the value's own gates. Pure: values in, answers out."""

from __future__ import annotations

import dataclasses
import random

import pytest

from gateway.core import policy
from gateway.core import site as S
from gateway.core.device import DeviceRecord
from gateway.core.gates import Control, Stage
from gateway.core.poll_memo import PollMemo, uncached
from gateway.core.settings import GateSettings
from tests.core.test_site_effects import V1, V2  # the same two deployments

SETTINGS = GateSettings(waves=(5.0, 25.0, 100.0), min_devices_per_wave=2, soak_min_s=300.0)


def devices(n: int) -> list[DeviceRecord]:
    return [
        DeviceRecord(f"d{i:02d}", {"hw": "rev1"}, model_id="detector", model_version="1.0.0")
        for i in range(n)
    ]


def gated(devs: list[DeviceRecord]) -> S.Site:
    site = S.Site()
    for version, index in ((1, (V1,)), (2, (V1, V2))):
        site, _ = S.apply_index(
            site,
            index_version=version,
            deployments=index,
            commands={},
            now=100.0,
            settings=SETTINGS,
            verified=lambda _sha: True,
            devices=devs,
            matrix=None,
        )
    return site


@pytest.mark.parametrize("seed", [5, 11, 23])
def test_the_memo_asks_the_published_value_itself_as_the_policy_would(seed: int) -> None:
    rng = random.Random(seed)
    devs = devices(rng.randint(10, 60))
    site = gated(devs)
    sites = [site]
    for action in ("hold", "release", "abort"):
        site, _ = S.on_control(
            site,
            V2.key,
            Control(action, "operator:ana", ""),
            now=200.0,
            settings=SETTINGS,
            devices=devs,
            matrix=None,
        )
        sites.append(site)
    memo = PollMemo()
    for site in sites:
        for d in rng.sample(devs, len(devs)):
            d = dataclasses.replace(d, model_version=rng.choice(["1.0.0", "2.0.0"]))
            facts = {
                "site": site,
                "device": d,
                "now": 300.0,
                "clock_trusted": True,
                "verified": lambda _s: True,
            }
            got = memo.answer(site, d, 300.0, True, lambda _s: True, None)
            assert (
                got
                == uncached(**facts, matrix=None)
                == uncached(**facts, matrix=None, gates=S.GatesView(site))
            )
            assert got == policy.answer(
                deployments=site.deployments,
                commands=site.commands,
                device=d,
                now=300.0,
                clock_trusted=True,
                verified=lambda _s: True,
                gates=S.GatesView(site),
            )


def test_a_wave_has_room_only_while_open_unheld_and_short_of_its_target() -> None:
    devs = devices(40)
    site = gated(devs)
    gate = site.gates[V2.key]
    inside = sorted(gate.admitted)[0]
    outside = next(d.device_id for d in devs if d.device_id not in gate.admitted)
    assert len(gate.admitted) == 2  # 5 % of 40, at least 2: the first wave is full at 40 devices
    assert not S.has_room(site, V2.key, outside, 40, SETTINGS)
    assert S.has_room(site, V2.key, outside, 100, SETTINGS)  # 5 % of 100 is 5
    assert not S.has_room(site, V2.key, inside, 100, SETTINGS)  # in already
    assert not S.has_room(site, "detector@9.9.9", outside, 100, SETTINGS)  # no gate: not judged
    held = dataclasses.replace(site, gates={V2.key: dataclasses.replace(gate, held_by="operator:ana")})
    assert not S.has_room(held, V2.key, outside, 100, SETTINGS)
    halted = dataclasses.replace(site, gates={V2.key: dataclasses.replace(gate, stage=Stage.HALTED)})
    assert not S.has_room(halted, V2.key, outside, 100, SETTINGS)
