"""A deployment the core can never offer (a cohort or version that does not parse) is the core's
fact, returned as a value (:func:`gateway.core.eligibility.parse_ok`); the gate keeper shell says it
in the log when the index comes into effect, and the rest of the index stands. Real files in
``tmp_path``, the real :class:`GateKeeper`."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from gateway.core.device import DeviceRecord
from gateway.rollout.keeper import GateKeeper
from tests.rollout.sim import DEFAULT_SETTINGS, manifest

DEVICES = [
    DeviceRecord(f"d{i}", {"hw": "rev1"}, model_id="detector", model_version="1.0.0") for i in range(5)
]


async def test_a_deployment_that_is_never_offered_is_logged_by_the_shell(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = manifest("1.0.0")
    bad = dataclasses.replace(manifest("2.0.0"), target_cohort="hw:(")
    keeper = GateKeeper(DEFAULT_SETTINGS, tmp_path)
    with caplog.at_level(logging.ERROR, logger="gateway"):
        await keeper.apply_index(
            1, [good, bad], {}, now=100.0, verified=lambda _s: True, devices=DEVICES, matrix=None
        )
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(said) == 1 and bad.key in said[0] and "target_cohort" in said[0], said
    assert caplog.records[0].name == "gateway.rollout.keeper"  # the shell, not the core
    assert good.key in keeper.gates or good.key in keeper.site.known  # the rest of the index stands
