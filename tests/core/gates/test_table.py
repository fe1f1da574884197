"""One table per concept: every gate criterion is one row, and everything else is derived from it
or checked against it. A new criterion is its row, its setting's default and its test; this test
fails when a row lacks any part or when the README or the reference config does not name it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.core.gates import GateLimits, InputDrift
from gateway.core.gates.table import CRITERIA, Kind, Unit, family
from gateway.core.gates.values import Result, Verdict
from gateway.core.gates.words import say
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text()
CONFIG = (ROOT / "config" / "gateway.toml").read_text()
SETTINGS = {f.name for f in dataclasses.fields(GateSettings)}
LIMITS = {f.name for f in dataclasses.fields(GateLimits)}


@pytest.mark.parametrize("row", CRITERIA, ids=lambda c: c.name)
def test_every_row_is_whole(row) -> None:  # type: ignore[no-untyped-def]
    assert row.name and row.words and row.figure in ("line", "bar")
    assert isinstance(row.kind, Kind) and isinstance(row.unit, Unit)
    assert row.form in ("diff", "ratio") and row.time in ("mult", "add")
    if row.setting.startswith("limit:"):
        assert row.setting[6:] in LIMITS, f"{row.name}: no GateLimits.{row.setting[6:]}"
    else:
        assert row.setting in SETTINGS, f"{row.name}: no gates.{row.setting}"
        assert f"\n{row.setting} = " in CONFIG, f"config/gateway.toml does not set gates.{row.setting}"
    assert f"`{row.name}" in README, f"the README's criteria table lacks {row.name}"
    # a row has a margin at the defaults (or the manifest's), and words for each answer
    lim = GateLimits.of(
        HealthChecks(
            max_cpu_percent=90,
            max_ram_percent=90,
            max_latency_ms=500,
            max_error_rate=0.05,
            min_confidence=0.5,
        ),
        GateSettings(),
    ).with_drift(InputDrift(0.1), "m")  # the alert row's threshold is the drift watch's
    assert row.margin(lim) is not None
    for answer in Result:
        v = Verdict(
            row.name + (":person" if row.metric == "class:" else ""), answer, 0.5, 0.4, 0.6, {"devices": 3}
        )
        text = say(v)
        assert row.words in text and str(answer).replace("_", " ") in text


def test_a_verdict_in_words_says_its_estimate_bound_baseline_and_margin() -> None:
    v = Verdict("error_rate_rise", Result.WORSE, 0.019, 0.010, 0.01, {"devices": 2}, lower=0.011, upper=0.027)
    assert say(v) == "errors 2.9 % (at least 2.1 %), baseline 1.0 %, margin +1 point: worse"
    assert family("class:spill") is family("class:person") is not None
    assert family("nonsense") is None


def test_names_are_unique_and_dry_run_is_checked_against_the_table() -> None:
    from gateway.service import settings as loader

    names = [c.name for c in CRITERIA]
    assert len(names) == len(set(names))
    assert sorted(loader.GATE_CRITERIA) == sorted(names)  # gates.dry_run is checked against the rows
