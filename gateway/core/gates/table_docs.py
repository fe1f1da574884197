"""The criteria for people who read files: the README's table and the margins of the reference config,
as text derived from the rows of :mod:`gateway.core.gates.table` and the settings' defaults (pure).

What is left to others: putting the text into the files (``python -m tests.core.gates.test_table``)
and checking that they hold it (``tests/core/gates/test_table.py``). :func:`splice` puts a block
between its two marker lines of a file's text.
"""

from __future__ import annotations

import dataclasses
import textwrap

from gateway.core.drift_settings import DriftSettings
from gateway.core.gates.table import CRITERIA, Criterion, Kind, Unit
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings

README_BEGIN = "<!-- the criteria: written from gateway/core/gates/table.py, do not edit by hand -->"
README_END = "<!-- end of the criteria -->"
CONFIG_BEGIN = "# -- the criteria's margins and limits: written from gateway/core/gates/table.py --"
CONFIG_END = "# -- end of the criteria --"

_SUFFIX = {"class:": ":<name>", "agree:": ":<name>", "drift:": ":<feature>"}  # one verdict per ...
_MANIFEST = {f.name for f in dataclasses.fields(HealthChecks)}
_GATES = {f.name for f in dataclasses.fields(GateSettings)}
_DRIFT = {f"drift_{f.name}": f.name for f in dataclasses.fields(DriftSettings)}


def _value(x: object) -> str:
    return repr(x) if not isinstance(x, str) else f'"{x}"'


def setting_names(row: Criterion) -> tuple[str, ...]:
    """The ``gates.*`` settings a site sets for this row (none: the manifest's or another section's)."""
    name = row.setting.removeprefix("limit:")
    return (name,) if name in _GATES else ()


def margin_text(row: Criterion) -> str:
    """Where the row's margin or limit comes from, with its default."""
    defaults = GateSettings()
    if not row.setting.startswith("limit:"):
        return f"`gates.{row.setting}` ({_value(getattr(defaults, row.setting))})"
    name = row.setting.removeprefix("limit:")
    if name in _DRIFT:
        return f"`drift.{_DRIFT[name]}` ({_value(getattr(DriftSettings(), _DRIFT[name]))})"
    if name not in _MANIFEST:
        return f"`gates.{name}` ({_value(getattr(defaults, name))})"
    manifest = f"the manifest's `health_checks.{name}`"
    if name not in _GATES:
        return manifest
    return f"{manifest}, tightened by `gates.{name}` ({_value(getattr(defaults, name))}: the manifest's)"


_STEP = {Unit.RATE: " (a fraction: 0.01 is one point)", Unit.PERCENT: " (points)", Unit.CELSIUS: " (°C)"}


def bound_text(row: Criterion) -> str:
    """What the setting's number means for the row, for the config file's comment."""
    if row.kind != Kind.RELATIVE:
        share = "a share of them " if row.kind == Kind.SHARE else ""
        return f"{share}at {'most' if row.higher_is_worse else 'least'} this"
    level = "the device's own level on the baseline"
    if row.unit == Unit.LOG_MS:
        return f"at most this many times {level}"
    if row.form == "ratio":
        return f"at least this share of {level}"
    side = "above" if row.higher_is_worse else "below"
    return f"at most this much {side} {level}{_STEP.get(row.unit, '')}"


def kind_text(row: Criterion) -> str:
    words = str(row.kind)
    if row.kind == Kind.ABSOLUTE and not row.higher_is_worse:
        words += ", at least"
    if row.weight == 0:
        words += ", **outside the stated rate**"
    if row.name in GateSettings().dry_run:
        words += "; **dry run by default**"
    return words


def readme_table() -> str:
    """The README's table of criteria, one line per row, between its markers."""
    lines = [
        README_BEGIN,
        "",
        "| criterion | compares | margin or limit (default) | kind | weight | on the dashboard |",
        "|---|---|---|---|---|---|",
    ]
    for row in CRITERIA:
        name = f"`{row.name}{_SUFFIX.get(row.metric, '')}`"
        drawn = f"{row.draw.chart} chart" if row.draw is not None else "verdicts"
        lines.append(
            f"| {name} | {row.compares} | {margin_text(row)} | {kind_text(row)} | {row.weight:g} | {drawn} |"
        )
    return "\n".join([*lines, "", README_END])


def config_block() -> str:
    """The margins and limits of ``[gates]`` in the reference config, each with its default and a
    comment per row that uses it, between its markers."""
    defaults = GateSettings()
    lines = [CONFIG_BEGIN]
    said: dict[str, list[str]] = {}
    for row in CRITERIA:
        for name in setting_names(row):
            said.setdefault(name, []).append(
                f"{row.name} ({row.kind}): {row.compares.replace('`', '')}; {bound_text(row)}"
            )
    for name, comments in said.items():
        if name in _MANIFEST:
            comments.append("the site may only tighten the manifest's health_checks; 0 keeps the manifest's")
        for comment in comments:
            lines += textwrap.wrap(comment, 100, initial_indent="# ", subsequent_indent="#   ")
        lines.append(f"{name} = {_value(getattr(defaults, name))}")
    return "\n".join([*lines, CONFIG_END])


def splice(text: str, block: str, begin: str, end: str) -> str:
    """``text`` with the lines from ``begin`` to ``end`` (both included) replaced by ``block``;
    ValueError when the markers are not there once each, in order."""
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"expected one {begin!r} and, after it, one {end!r}")
    head, rest = text.split(begin, 1)
    return head + block + rest.split(end, 1)[1]
