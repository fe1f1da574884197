"""The gate's one table of criteria (:mod:`gateway.core.gates.table`): every row has its name, its
setting, its words, its unit and its drawing; the settings' list of criteria, the README and the
reference config name the same rows; every row can be said in words in each of the three answers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway.core.gates import GateLimits, Verdict
from gateway.core.gates.sequential import Answer
from gateway.core.gates.table import CRITERIA, Criterion, Kind, Unit, family
from gateway.core.gates.words import say, say_short
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GATE_CRITERIA, GateSettings

ROOT = Path(__file__).resolve().parents[3]
LIMITS = GateLimits.of(
    HealthChecks(
        max_cpu_percent=80,
        max_ram_percent=70,
        max_latency_ms=150,
        max_error_rate=0.05,
        min_confidence=0.5,
        expected_classes=(("spill", 0.005),),
    ),
    GateSettings(),
)


def _setting(c: Criterion) -> str:
    return c.setting.removeprefix("limit:")


def test_names_are_unique_and_the_settings_list_is_the_table() -> None:
    names = [c.name for c in CRITERIA]
    assert len(names) == len(set(names))
    assert sorted(GATE_CRITERIA) == sorted(names)  # gates.dry_run is checked against this list


@pytest.mark.parametrize("c", CRITERIA, ids=lambda c: c.name)
def test_every_row_is_complete(c: Criterion) -> None:
    assert c.words and c.kind in Kind and c.unit in Unit
    assert c.form in ("diff", "ratio") and c.time in ("mult", "add") and c.figure in ("line", "bar")
    if c.setting.startswith("limit:"):
        assert _setting(c) in {f.name for f in dataclasses.fields(GateLimits)}
    else:
        assert c.setting in {f.name for f in dataclasses.fields(GateSettings)}
    margin = c.margin(LIMITS)
    assert margin is not None, "judged at a site with every limit set"
    assert c.tau(margin) > 0
    assert family(c.name) is c and family(f"{c.name}:spill") is c


@pytest.mark.parametrize("c", CRITERIA, ids=lambda c: c.name)
def test_every_rows_setting_is_named_in_the_readme_and_the_reference_config(c: Criterion) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    config = (ROOT / "config" / "gateway.toml").read_text(encoding="utf-8")
    assert f"`{_setting(c)}`" in readme or f"`gates.{_setting(c)}`" in readme
    if not c.setting.startswith("limit:") or _setting(c) in GateSettings.__dataclass_fields__:
        assert f"{_setting(c)} =" in config


@pytest.mark.parametrize("answer", list(dict.fromkeys(Answer)))
@pytest.mark.parametrize("c", CRITERIA, ids=lambda c: c.name)
def test_every_row_is_said_in_words_in_each_answer(c: Criterion, answer: Answer) -> None:
    name = f"{c.name}:spill" if c.metric == "class:" else c.name
    words = {"worse": "worse", "no_worse": "no worse", "undecided": "undecided"}[answer.value]
    bare = Verdict(name, answer, limit=0.1, note="not enough data yet")
    full = Verdict(
        name,
        answer,
        candidate=0.5,
        baseline=0.25 if c.kind == Kind.RELATIVE else None,
        limit=0.1,
        samples={"devices": 2, "windows": 6, "failed": 1, "runners": 2, "silent": 1},
        lower=0.4,
        upper=0.6,
        e_value=2.0,
    )
    for v in (bare, full):
        text = say(v)
        assert text.endswith(f": {words}") and c.words in text, text
        assert say_short(v).endswith(f": {words}")
