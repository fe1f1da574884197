"""The poll memo gives every answer the policy would give if asked afresh.

Random runs of a small site: deployments with time windows, cohorts and firmware ranges; the clock
moving (also backwards, and onto window edges exactly), trusted or not; blobs verified and evicted;
devices changing attributes and versions; indexes landing; gates opening, halting and being held.
After every step every device's memo answer is compared with :func:`uncached`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Any

import pytest

from gateway.core import site as S
from gateway.core.device import DeviceRecord
from gateway.core.gates import Action, Control
from gateway.core.manifest import Deployment, parse_deployment
from gateway.core.poll_memo import PollMemo, uncached, window_edges
from gateway.core.settings import GateSettings

SETTINGS = GateSettings(min_devices_per_wave=2)
EDGES = (1000.0, 2000.0, 3000.0)


def deployment(version: str, rng: random.Random) -> Deployment:
    raw: dict[str, Any] = {
        "model_id": "detector",
        "version": version,
        "artifact_url": f"artifacts/detector/{version}/model.bin",
        "signature_url": f"artifacts/detector/{version}/model.bin.sig",
        "sha256": hashlib.sha256(version.encode()).hexdigest(),
        "length": 1000,
        "target_cohort": rng.choice(["", "hw:rev2", "NOT hw:rev1"]),
        "rollout_percentage": rng.choice([100, 100, 50]),
    }
    if rng.random() < 0.5:
        raw["start_time"] = rng.choice(EDGES)
    if rng.random() < 0.5:
        raw["end_time"] = raw.get("start_time", rng.choice(EDGES)) + rng.choice([500, 1000])
    if rng.random() < 0.3:
        raw["compatibility"] = {"min_firmware": "1.2.0"}
    return parse_deployment(raw)


def run(seed: int, steps: int = 200) -> int:
    rng = random.Random(seed)
    devices = {
        f"dev-{i}": DeviceRecord(f"dev-{i}", {"hw": f"rev{i % 3}", "fw": "1.1.0"}, model_id="detector")
        for i in range(12)
    }
    site = S.Site()
    memo = PollMemo()
    verified: set[str] = set()
    now, trusted, index_version, versions = 1500.0, True, 0, ["1.0.0"]
    checked = 0
    for _ in range(steps):
        op = rng.randrange(8)
        if op == 0:  # an index lands
            index_version += 1
            versions.append(f"1.{index_version}.0")
            deps = tuple(deployment(v, rng) for v in versions[-rng.randint(1, 2) :])
            commands = {"detector@" + versions[-1]: "paused"} if rng.random() < 0.1 else {}
            site, _ = S.apply_index(
                site,
                index_version=index_version,
                deployments=deps,
                commands=commands,
                now=now,
                settings=SETTINGS,
                verified=verified.__contains__,
                devices=list(devices.values()),
                matrix=None,
            )
        elif op == 1:  # the clock moves, sometimes back, sometimes onto an edge exactly
            now = rng.choice([*EDGES, *(e + 500 for e in EDGES), now + rng.uniform(-600, 600)])
        elif op == 2:
            trusted = rng.random() < 0.7
        elif op == 3:  # a blob verifies or is evicted
            sha = hashlib.sha256(rng.choice(versions).encode()).hexdigest()
            verified.symmetric_difference_update({sha})
        elif op == 4:  # a device reports other facts
            dev_id = rng.choice(sorted(devices))
            rec = devices[dev_id]
            change = rng.choice(["fw", "hw", "version", "same"])
            if change == "fw":
                rec = dataclasses.replace(rec, attrs={**rec.attrs, "fw": rng.choice(["1.1.0", "1.3.0"])})
            elif change == "hw":
                rec = dataclasses.replace(rec, attrs={**rec.attrs, "hw": rng.choice(["rev1", "rev2"])})
            elif change == "version":
                rec = dataclasses.replace(rec, model_version=rng.choice([None, *versions]))
            else:
                rec = dataclasses.replace(rec, attrs=dict(rec.attrs))  # equal, another object
            devices[dev_id] = rec
        elif op == 5 and site.gates:  # an operator acts on a gate
            key = rng.choice(sorted(site.gates))
            action = rng.choice([Action.HOLD, Action.RELEASE, Action.ABORT, Action.APPROVE])
            try:
                site, _ = S.on_control(
                    site,
                    key,
                    Control(action, by="operator:test", why="random"),
                    now=now,
                    settings=SETTINGS,
                    devices=list(devices.values()),
                    matrix=None,
                )
            except S.ControlRefused:
                pass
        elif op == 6:  # a tick: evidence, soaks, waves
            site, _ = S.tick(
                site,
                now=now,
                settings=SETTINGS,
                windows=[],
                events=[],
                devices=list(devices.values()),
                matrix=None,
            )
        for rec in devices.values():
            facts: dict[str, Any] = {
                "site": site,
                "device": rec,
                "now": now,
                "clock_trusted": trusted,
                "verified": verified.__contains__,
                "matrix": None,
                "gates": S.GatesView(site),
            }
            assert memo.answer(**facts) == uncached(**facts), (seed, rec, now, trusted)
            checked += 1
    return memo.hits


@pytest.mark.parametrize("seed", range(25))
def test_the_memo_answers_as_the_policy_asked_afresh(seed: int) -> None:
    assert run(seed) > 0  # and it did answer from memory


def ungated_site(d: Deployment) -> S.Site:
    """A site whose index in effect is ``d`` alone, gates off, every blob verified."""
    site, _ = S.apply_index(
        S.Site(),
        index_version=1,
        deployments=(d,),
        commands={},
        now=1500.0,
        settings=dataclasses.replace(SETTINGS, enabled=False),
        verified=lambda _s: True,
        devices=[],
        matrix=None,
    )
    return site


def test_a_changed_input_is_caught() -> None:
    """The check can fail: a memo that ignored the clock would give a closed window's answer."""
    rng = random.Random(0)
    d = dataclasses.replace(deployment("1.0.0", rng), start_time=1000.0, end_time=2000.0)
    site = ungated_site(d)
    dev = DeviceRecord("dev-1", {"hw": "rev2"}, model_id="detector")
    facts: dict[str, Any] = {
        "site": site,
        "device": dev,
        "clock_trusted": True,
        "verified": lambda _s: True,
        "matrix": None,
        "gates": S.GatesView(site),
    }
    memo = PollMemo()
    assert memo.answer(**facts, now=1500.0).deployment == d
    assert memo.answer(**facts, now=2000.0) == uncached(**facts, now=2000.0)
    assert uncached(**facts, now=2000.0).deployment is None  # the window closed at its edge
    assert window_edges(site) == (1000.0, 2000.0)


def test_equal_answers_are_one_object_until_the_inputs_change() -> None:
    """The HTTP layer keeps each answer's reply by the answer's identity: devices with equal answers
    must share one object, and a new index must not hand out an object of the old one."""
    rng = random.Random(1)
    d1, d2 = deployment("1.0.0", rng), deployment("2.0.0", rng)
    d1 = dataclasses.replace(d1, target_cohort="", rollout_percentage=100, start_time=None, end_time=None)
    d2 = dataclasses.replace(d2, target_cohort="", rollout_percentage=100, start_time=None, end_time=None)

    memo, site = PollMemo(), ungated_site(d1)
    devs = [DeviceRecord(f"dev-{i}", {"hw": "rev2", "fw": "1.3.0"}, model_id="detector") for i in range(5)]
    answers = [memo.answer(site, dev, 1500.0, True, lambda _s: True, None, S.GatesView(site)) for dev in devs]
    assert answers[0].deployment == d1
    assert all(a is answers[0] for a in answers)  # computed five times, one object
    assert memo.misses == 5
    site = ungated_site(d2)
    after = memo.answer(site, devs[0], 1500.0, True, lambda _s: True, None, S.GatesView(site))
    assert after.deployment == d2 and after is not answers[0]
