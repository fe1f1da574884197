"""One table per concept: every gate criterion is one row, and everything else is derived from it
or checked against it. A new criterion is its row, its setting's default and its test; this test
fails when a row lacks any part, or when the README's table or the reference config's margins differ
from what the rows give. ``python -m tests.core.gates.test_table`` writes both from the rows."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from gateway.core.gates import GateLimits, InputDrift, table_docs
from gateway.core.gates.table import CHARTS, CRITERIA, Kind, Unit, family
from gateway.core.gates.values import Result, Verdict
from gateway.core.gates.words import say
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = {f.name for f in dataclasses.fields(GateSettings)}
LIMITS = {f.name for f in dataclasses.fields(GateLimits)}
README_PATH, CONFIG_PATH = ROOT / "README.md", ROOT / "config" / "gateway.toml"
README, CONFIG = README_PATH.read_text(), CONFIG_PATH.read_text()


@pytest.mark.parametrize("row", CRITERIA, ids=lambda c: c.name)
def test_every_row_is_whole(row) -> None:  # type: ignore[no-untyped-def]
    assert row.name and row.words and row.compares and row.weight >= 0
    assert isinstance(row.kind, Kind) and isinstance(row.unit, Unit)
    assert row.form in ("diff", "ratio") and row.time in ("mult", "add")
    if row.setting.startswith("limit:"):
        assert row.setting[6:] in LIMITS, f"{row.name}: no GateLimits.{row.setting[6:]}"
    else:
        assert row.setting in SETTINGS, f"{row.name}: no gates.{row.setting}"
        assert f"\n{row.setting} = " in CONFIG, f"config/gateway.toml does not set gates.{row.setting}"
    if row.draw is not None:  # on a chart the dashboard shows, over a series the history keeps
        from gateway.http.dashboard.gate_panel import CHART_VALUE
        from gateway.telemetry.history import Point

        assert row.draw.chart in CHARTS and row.draw.limit and row.unit in CHART_VALUE
        assert row.draw.series in {f.name for f in dataclasses.fields(Point)}, row.draw.series
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


def test_every_chart_draws_rows_of_one_unit() -> None:
    for chart in CHARTS:
        units = {c.unit for c in CRITERIA if c.draw is not None and c.draw.chart == chart}
        assert len(units) == 1, (chart, units)


def test_the_readme_s_table_and_the_config_s_margins_are_the_rows() -> None:
    """Written from the rows; when this fails, ``python -m tests.core.gates.test_table`` writes them."""
    assert table_docs.splice(README, table_docs.readme_table(), *README_MARKS) == README
    assert table_docs.splice(CONFIG, table_docs.config_block(), *CONFIG_MARKS) == CONFIG
    for row in CRITERIA:  # every row in both, with its default
        assert f"| `{row.name}" in README and table_docs.margin_text(row) in README
        for name in table_docs.setting_names(row):
            assert f"\n{name} = {getattr(GateSettings(), name)!r}\n" in CONFIG


def test_a_row_that_lacks_a_part_cannot_be_written() -> None:
    from gateway.core.gates.table import Criterion

    with pytest.raises(TypeError, match=r"compares|draw"):
        Criterion("x", Kind.RELATIVE, "cpu", "cpu_rise_max_percent", "CPU", Unit.PERCENT)  # type: ignore[call-arg]


def test_splice_refuses_text_without_its_markers() -> None:
    with pytest.raises(ValueError, match="expected one"):
        table_docs.splice("no markers here", "block", *README_MARKS)
    assert (
        table_docs.splice("a\n<b>\nold\n</b>\nz", "<b>\nnew\n</b>", "<b>", "</b>") == "a\n<b>\nnew\n</b>\nz"
    )


README_MARKS = (table_docs.README_BEGIN, table_docs.README_END)
CONFIG_MARKS = (table_docs.CONFIG_BEGIN, table_docs.CONFIG_END)


def write() -> None:
    """Write the README's table and the config's margins from the rows."""
    README_PATH.write_text(table_docs.splice(README, table_docs.readme_table(), *README_MARKS))
    CONFIG_PATH.write_text(table_docs.splice(CONFIG, table_docs.config_block(), *CONFIG_MARKS))
    print(f"wrote {README_PATH} and {CONFIG_PATH}", file=sys.stderr)


if __name__ == "__main__":
    write()
