"""One canary gate as the dashboard shows it: stage, waves, timeline, controls and health charts.

Pure: the gate's state, its manifest's limits, the window history and ``now`` in; text and SVG
out. The timeline is the gate's own decision record (:class:`~gateway.core.gates.Decision`: the
same records as the audit log, newest first): each wave opened, advanced or halted with the
criterion, its figures and sample sizes, and each control with who gave it and why. The charts
put the candidate and its baseline on the same axes with the limits the gate judges by: the
absolute ones as horizontal lines, the ones relative to the baseline (latency ratio, error, CPU
and temperature rise) as a dashed line that follows the baseline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, cast

from gateway.core.gates import (
    Action,
    Decision,
    GateLimits,
    GateState,
    Result,
    Stage,
    Verdict,
    control_refusal,
)
from gateway.core.gates.table import CHARTS, CRITERIA, Criterion, Drawing, Kind, Unit, family
from gateway.core.gates.words import say, value_text
from gateway.core.manifest import Deployment, HealthChecks
from gateway.core.settings import GateSettings
from gateway.http.dashboard import agreement_panel, human
from gateway.http.dashboard.svg import Limit, Series, line_chart
from gateway.telemetry.history import Point, WindowHistory

MAX_TIMELINE = 60
STAGE_TEXT = {
    Stage.SHADOW: "shadow: the candidate runs beside the current model",
    Stage.WAVES: "rolling out in waves",
    Stage.HALTED: "HALTED: a criterion failed; offered to nobody, its devices roll back",
    Stage.ABORTED: "ABORTED: final; its devices roll back",
    Stage.DONE: "done: every wave passed",
}
ACTION_TEXT = {
    Action.OPEN: "gate opened",
    Action.ADVANCE: "wave passed, next wave opened",
    Action.AWAIT: "wave passed, waiting for approval",
    Action.APPROVE: "approved",
    Action.DONE: "rollout complete",
    Action.HALT: "HALTED",
    Action.OBSERVE: "dry-run criterion failed (recorded only)",
    Action.HOLD: "held",
    Action.RELEASE: "released",
    Action.ABORT: "ABORTED",
    Action.CHANGED: "artifact changed",
    Action.WAIT_REFERENCE: "waiting for the devices' levels on the baseline",
}


def _figure(criterion: str, value: float | None) -> str:
    """A verdict's number in its criterion's unit (the table's row says which)."""
    row = family(criterion)
    if value is None:
        return human.DASH
    if row is None:
        return human.number(value)
    if row.kind == Kind.RELATIVE and row.unit == Unit.LOG_MS:
        return f"×{value:.2f}"
    return value_text(row.unit, value)


def verdict_row(v: Verdict) -> dict[str, str]:
    samples = ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in v.samples.items())
    return {
        "criterion": v.criterion.replace("_", " "),
        "words": ("dry run: " if v.dry_run else "") + say(v),
        "e_value": f"{v.e_value:.3g}" if v.e_value is not None else "",
        "result": ("dry run: " if v.dry_run else "") + str(v.result),
        "candidate": _figure(v.criterion, v.candidate),
        "baseline": _figure(v.criterion, v.baseline) if v.baseline is not None else "",
        "limit": _figure(v.criterion, v.limit) if v.limit is not None else "",
        "samples": samples,
        "note": "" if (row := family(v.criterion)) is not None and row.stage else v.note,  # in its words
    }


def timeline(decisions: Sequence[Decision], now: float) -> list[dict[str, Any]]:
    """Newest first: what happened, when, by whom, and on which evidence."""
    out = []
    for d in reversed(decisions[-MAX_TIMELINE:]):
        failed = [v for v in d.verdicts if v.result == Result.WORSE]
        out.append(
            {
                "key": f"{d.at:.3f}:{d.action}:{d.wave}",  # keeps a detail open across redraws
                "when": human.ago(d.at, now),
                "wave": d.wave + 1,
                "action": str(d.action),
                "what": ACTION_TEXT.get(d.action, str(d.action)),
                "by": d.by.removeprefix("operator:") if d.by != "gate" else "the gate",
                "control": d.by != "gate",
                "reason": d.reason,
                "failed": [verdict_row(v) for v in failed],
                "verdicts": [verdict_row(v) for v in d.verdicts if v.result != Result.WORSE],
            }
        )
    return out


def waves(g: GateState, steps: Sequence[float]) -> list[dict[str, str]]:
    admitted = Counter(g.admitted.values())
    out = []
    for i, pct in enumerate(steps):
        if g.stage == Stage.DONE or i < g.wave:
            state = "passed"
        elif i > g.wave:
            state = "to come"
        elif g.stage == Stage.HALTED:
            state = "halted"
        elif g.stage == Stage.ABORTED:
            state = "aborted"
        elif g.held_by:
            state = "held"
        elif g.awaiting_approval:
            state = "waiting for approval"
        else:
            state = "soaking" if g.stage == Stage.WAVES else str(g.stage)
        out.append(
            {"wave": str(i + 1), "share": f"{pct:g} %", "admitted": str(admitted.get(i, 0)), "state": state}
        )
    return out


def _xs(points: Sequence[Point], value: Callable[[Point], float | None]) -> list[tuple[float, float | None]]:
    return [(p.end, value(p)) for p in points]


def _relative(
    base: Sequence[Point], value: Callable[[Point], float | None], how: Callable[[float], float]
) -> list[tuple[float, float | None]]:
    return [(p.end, None if (v := value(p)) is None else how(v)) for p in base]


def charts(g: GateState, lim: GateLimits, history: WindowHistory) -> list[dict[str, str]]:
    """One chart per title of :data:`~gateway.core.gates.table.CHARTS`, drawn from the rows placed
    on it: the candidate's and the baseline's lines of each series, each relative row's margin as a
    dashed line that follows the baseline and each absolute row's limit as a horizontal line."""
    cand = history.series(g.model_id, g.version) or history.series(g.model_id, g.version, shadow=True)
    base = history.series(g.model_id, g.baseline_version) if g.baseline_version else ()
    out = []
    for title in CHARTS:
        drawn = [(row, row.draw) for row in CRITERIA if row.draw is not None and row.draw.chart == title]
        series: list[Series] = []
        for d in sorted({d.series: d for _, d in drawn}.values(), key=lambda d: d.faint):
            series += _pair(g, cand, base, d)
        limits: list[Limit] = []
        for row, d in drawn:
            if row.kind == Kind.RELATIVE and base:
                series.append(_follows(row, d, base, lim))
            elif row.kind != Kind.RELATIVE and (v := getattr(lim, row.setting.removeprefix("limit:"))):
                limits += [Limit(d.limit, v)] if v > 0 else []
        unit = next(row.unit for row, _ in drawn)
        out.append(_chart(title, series, limits, CHART_VALUE[unit]))
    return out


# a chart's numbers in the unit of the rows drawn on it
CHART_VALUE: dict[Unit, Callable[[float], str]] = {
    Unit.RATE: human.share,
    Unit.PERCENT: human.percent,
    Unit.LOG_MS: lambda v: human.number(v, "ms"),
    Unit.CELSIUS: lambda v: human.number(v, "°C"),
    Unit.SCORE: human.number,
    Unit.RATIO: lambda v: human.number(v, "x"),
}


def _pair(g: GateState, cand: Sequence[Point], base: Sequence[Point], d: Drawing) -> list[Series]:
    """The candidate's line of a series and, with a baseline, the baseline's."""

    def value(p: Point) -> float | None:
        return cast(float | None, getattr(p, d.series))

    out = [Series(f"{g.version}{d.label}", _xs(cand, value), faint=d.faint)]
    if base:
        out.append(Series(f"{g.baseline_version}{d.label}", _xs(base, value), role="baseline", faint=d.faint))
    return out


def _follows(row: Criterion, d: Drawing, base: Sequence[Point], lim: GateLimits) -> Series:
    """A relative row's margin over the baseline's line: times a ratio (latency), plus a rise."""
    margin = float(getattr(lim.site, row.setting))
    if row.unit == Unit.LOG_MS:
        how, label = (lambda v: v * margin), f"{d.limit} ×{margin:g}"
    else:
        how, label = (lambda v: v + margin), d.limit
    values = _relative(base, lambda p: cast(float | None, getattr(p, d.series)), how)
    return Series(label, values, role="limit", dashed=True)


def _chart(
    title: str, series: list[Series], limits: list[Limit], fmt: Callable[[float], str]
) -> dict[str, str]:
    return {"title": title, "svg": line_chart(title, series, limits, fmt=fmt)}


def limits_of(deployment: Deployment | None, settings: GateSettings) -> GateLimits:
    return GateLimits.of(deployment.health if deployment else HealthChecks(), settings)


def _summary(g: GateState, settings: GateSettings, on_candidate: Callable[[str], bool] | None) -> str:
    head = f"wave {g.wave + 1} of {len(settings.waves)}, {len(g.admitted)} admitted"
    if not g.stopped:
        return f"{head}, {len(g.ran)} running it"
    left = [d for d in g.rollback_set if on_candidate is None or on_candidate(d)]
    back = len(g.rollback_set) - len(left)
    went = f" ({back} back on {g.baseline_version or 'their previous version'})" if back else ""
    return f"{head}, {len(g.ran)} ran it, {len(left)} to roll back{went}"


def panel(
    g: GateState,
    *,
    deployment: Deployment | None,
    settings: GateSettings,
    history: WindowHistory,
    now: float,
    on_candidate: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    """Everything the page shows of one gate but its charts (:func:`charts`, drawn apart: cached).
    ``on_candidate(device)``: whether the inventory has the device on the candidate still, so the
    card counts those left to roll back as the devices report, not the gate's fixed set."""
    last = g.decisions[-1] if g.decisions else None
    stage = STAGE_TEXT.get(g.stage, str(g.stage))
    if g.held_by:
        stage = f"HELD by {g.held_by.removeprefix('operator:')}; " + stage
    if g.awaiting_approval:
        stage += "; waiting for approval"
    return {
        "deployment": g.deployment,
        "model": g.model_id,
        "version": g.version,
        "baseline": g.baseline_version or "none (a first version)",
        "stage": str(g.stage),
        "held": bool(g.held_by),
        "stage_text": stage,
        "summary": _summary(g, settings, on_candidate),
        "last": ACTION_TEXT.get(last.action, str(last.action)) + f": {last.reason}" if last else "",
        "last_when": human.ago(last.at, now) if last else "",
        "waves": waves(g, settings.waves),
        "controls": [a for a in ("hold", "release", "approve", "abort") if control_refusal(g, a) is None],
        "timeline": timeline(g.decisions, now),
        "agreement": agreement_panel.agreement(g, settings),  # the shadow stage's, or None
    }
