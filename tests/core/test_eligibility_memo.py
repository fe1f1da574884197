"""The eligibility memo gives what ``decide`` would give now, over random sites that change under it:
devices whose facts change (or whose record is replaced with the same facts), indexes that come into
effect (new objects, equal or not), a clock that crosses deployment windows, a matrix that comes and
goes. Every pass of :func:`gateway.core.reach.eligible_for` (the process's memo, shared with every
other test) and of a fresh :class:`EligibilityMemo` is compared with ``decide`` itself."""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest

from firmware_compat import CompatMatrix
from gateway.core.device import DeviceRecord
from gateway.core.eligibility import decide
from gateway.core.eligibility_memo import EligibilityMemo
from gateway.core.manifest import Deployment, parse_deployment
from gateway.core.reach import eligible_for

NOW = 1_790_000_000.0
VERSIONS = ["1.0.0", "1.1.0", "2.0.0", "2.1.0-rc.1"]
FIRMWARE = ["1.0.0", "1.5.0", "2.0.0", "3.0.0"]
COHORTS = ["*", "hw:rev1", "NOT hw:rev2", "device_id:d-1*", "fw:2*"]
MATRIX = CompatMatrix.from_json({"models": {"detector": {"1.0.0": ["1.0.0"], "2.0.0": ["1.0.0", "2.0.0"]}}})


def _deployments(rng: random.Random) -> list[Deployment]:
    out = []
    for version in rng.sample(VERSIONS, rng.randint(1, 3)):
        doc: dict[str, Any] = {
            "model_id": rng.choice(["detector", "detector", "counter"]),
            "version": version,
            "artifact_url": f"https://r/artifacts/m/{version}/m.bin",
            "signature_url": f"https://r/artifacts/m/{version}/m.bin.sig",
            "sha256": "a" * 64,
            "length": 10,
            "target_cohort": rng.choice(COHORTS),
            "rollout_percentage": rng.choice([100, 100, 50, 10]),
        }
        if rng.random() < 0.5:
            doc["start_time"] = NOW + rng.uniform(-100, 100)
        if rng.random() < 0.3:
            doc["end_time"] = NOW + rng.uniform(0, 200)
        if rng.random() < 0.3:
            doc["min_firmware"] = rng.choice(FIRMWARE)
        out.append(parse_deployment(doc))
    return out


def _attrs(rng: random.Random) -> dict[str, str]:
    attrs = {"hw": rng.choice(["rev1", "rev2"])}
    if rng.random() < 0.8:
        attrs["fw"] = rng.choice(FIRMWARE)
    return attrs


def _device(rng: random.Random, i: int) -> DeviceRecord:
    version = rng.choice([*VERSIONS, None])
    return DeviceRecord(
        f"d-{i}",
        _attrs(rng),
        model_id=rng.choice(["detector", None]) if version else None,
        model_version=version,
    )


def _change(rng: random.Random, rec: DeviceRecord) -> DeviceRecord:
    what = rng.randrange(5)
    if what == 0:  # the same facts in a new record (a poll or a metrics message moved last_seen)
        return dataclasses.replace(rec, last_seen=rec.last_seen + 1)
    if what == 1:  # equal attrs, a new mapping
        return dataclasses.replace(rec, attrs=dict(rec.attrs))
    if what == 2:
        return dataclasses.replace(rec, attrs=_attrs(rng))
    if what == 3:
        return dataclasses.replace(rec, model_version=rng.choice([*VERSIONS, None]))
    return dataclasses.replace(rec, model_id=rng.choice(["detector", "counter", None]))


@pytest.mark.parametrize("seed", range(20))
def test_the_memo_answers_what_decide_answers_now(seed: int) -> None:
    rng = random.Random(seed)
    devices = [_device(rng, i) for i in range(40)]
    deployments = _deployments(rng)
    now = NOW - 150
    matrix: CompatMatrix | None = None
    fresh = EligibilityMemo()
    for _step in range(150):
        roll = rng.random()
        if roll < 0.5:
            for _ in range(rng.randint(1, 5)):
                k = rng.randrange(len(devices))
                devices[k] = _change(rng, devices[k])
        elif roll < 0.6:  # an index comes into effect: new objects, often equal to an earlier one's
            deployments = _deployments(random.Random(rng.randrange(4)))
        elif roll < 0.8:  # often across a window's edge
            now += rng.uniform(0, 30)
        elif roll < 0.9:
            matrix = None if matrix is not None else MATRIX
        else:
            devices.append(_device(rng, len(devices)))
        live = [d for d in deployments if d.end_time is None or d.end_time > now]
        for d in live:
            want = {
                r.device_id
                for r in devices
                if r.model_version == d.version or decide(live, r, now, matrix).deployment == d
            }
            assert set(eligible_for(d, live, devices, now, matrix)) == want
            key = fresh.pass_key(live, now)
            for r in devices:
                assert fresh.chosen(key, r, now, matrix) == decide(live, r, now, matrix).deployment
