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

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

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
from gateway.core.gates.table import Kind, Unit, family
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
    """Latency, error rate, CPU and temperature: candidate and baseline, with the gate's limits."""
    s = lim.site
    cand = history.series(g.model_id, g.version) or history.series(g.model_id, g.version, shadow=True)
    base = history.series(g.model_id, g.baseline_version) if g.baseline_version else ()
    c, b = f"{g.version}", f"{g.baseline_version}"

    def pair(value: Callable[[Point], float | None], label: str = "") -> list[Series]:
        out = [Series(f"{c}{label}", _xs(cand, value))]
        if base:
            out.append(Series(f"{b}{label}", _xs(base, value), role="baseline"))
        return out

    def limits(*pairs: tuple[str, float | None]) -> list[Limit]:
        return [Limit(name, v) for name, v in pairs if v is not None and v > 0]

    def relative(
        value: Callable[[Point], float | None], how: Callable[[float], float], label: str
    ) -> list[Series]:
        return [Series(label, _relative(base, value, how), role="limit", dashed=True)] if base else []

    ratio = s.latency_ratio_max
    lat = [
        *pair(lambda p: p.latency_p95_ms, " p95"),
        *[dataclasses.replace(x, faint=True) for x in pair(lambda p: p.latency_p50_ms, " p50")],
        *relative(lambda p: p.latency_p50_ms, lambda v: v * ratio, f"p50 limit ×{ratio:g}"),
    ]
    err = pair(lambda p: p.error_rate) + relative(
        lambda p: p.error_rate, lambda v: v + s.error_rate_rise_max, "rise limit"
    )
    cpu = pair(lambda p: p.cpu_percent) + relative(
        lambda p: p.cpu_percent, lambda v: v + s.cpu_rise_max_percent, "rise limit"
    )
    temp = pair(lambda p: p.temperature_c) + relative(
        lambda p: p.temperature_c, lambda v: v + s.temperature_rise_max_c, "rise limit"
    )
    return [
        _chart(
            "Latency (p95, thin: p50)",
            lat,
            limits(("p95 limit", lim.max_latency_ms)),
            lambda v: human.number(v, "ms"),
        ),
        _chart("Error rate", err, limits(("limit", lim.max_error_rate)), human.share),
        _chart("CPU", cpu, limits(("limit", lim.max_cpu_percent)), human.percent),
        _chart(
            "Temperature", temp, limits(("limit", lim.max_temperature_c)), lambda v: human.number(v, "°C")
        ),
    ]


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
