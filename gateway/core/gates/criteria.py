"""Every criterion of a gate judged on the evidence of the rollout so far: worse, no worse than its
margin, or undecided (pure).

Each row of :mod:`gateway.core.gates.table` that applies to this gate (a margin is set; a relative
row needs a baseline and devices with a level on it) gets a share of ``false_halt_rate`` in
proportion to its weight in the table (a class row shares its share among the classes judged): a candidate no worse than every margin is
halted by some criterion, at some wave and some look, at most at that rate (Bonferroni over the
rows; each row's confidence sequence holds at every look at once). "No worse" asks for the evidence
at ``no_worse_risk``. A row with no data yet is undecided; a row the candidate's devices never
report (no temperature sensor) is left out once the candidate has ``min_samples`` windows. A row
with a stage (the shadow agreement rows) keeps its share of the rate over the whole rollout of a gate
that has that stage, and is judged only in it. The ``input_drift`` row (kind ``alert``) is the drift
watch's alerts on the model's input features, outside the stated rate (weight 0): each judged
feature is worse when its alert was raised since the gate opened, no worse otherwise; with no
feature judged (no drift watch, as in ``gate replay``, or a model that reports none) it is left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from gateway.core.gates.sequential import Answer, judge_mean, judge_share
from gateway.core.gates.shadow import shadow_verdict
from gateway.core.gates.stream import Stream
from gateway.core.gates.table import CRITERIA, Criterion, Kind, Unit
from gateway.core.gates.values import FeatureDrift, GateLimits, GateState, Stage, Verdict


def _applies(c: Criterion, state: GateState, lim: GateLimits) -> bool:
    if c.margin(lim) is None:
        return False
    if c.stage == Stage.SHADOW:  # counted over the whole rollout of a gate with a shadow stage
        has_shadow = lim.site.shadow and state.baseline_version is not None
        return has_shadow and (c.metric != "agree:" or bool(state.classes))
    if c.kind == Kind.ALERT:
        return bool(lim.drift)  # no judged feature: left out, like a metric nobody reports
    if c.kind != Kind.RELATIVE:
        return c.metric != "class:" or bool(lim.expected_classes)
    if state.baseline_version is None or not state.reference:
        return False
    if c.metric == "class:":
        return bool(state.classes)
    return any(c.metric in metrics for metrics in state.reference.values())


def rows(state: GateState, lim: GateLimits) -> list[Criterion]:
    """The rows judged for this gate: fixed once it opens (its margins, baseline and reference)."""
    return [c for c in CRITERIA if _applies(c, state, lim)]


def evaluate(state: GateState, lim: GateLimits, now: float | None = None) -> list[Verdict]:
    """Every criterion on the evidence so far; ``now`` judges silence."""
    s = lim.site
    judged = rows(state, lim)
    if not judged:
        return []
    total = sum(c.weight for c in judged) or 1.0
    seen = max((st.windows for st in state.streams.values()), default=0)
    out: list[Verdict] = []
    for c in judged:
        alpha = s.false_halt_rate * c.weight / total
        if c.stage and c.stage != state.stage:
            continue  # judged only in its stage (its share of the rate stays spent on it)
        if c.kind == Kind.ALERT:
            out.extend(_drift(c, f, state, lim) for f in lim.drift)
            continue
        if c.kind == Kind.SHARE:
            v = _share(c, state, lim, alpha, now)
            if v is not None:
                out.append(v)
            continue
        keys = _keys(c, state, lim)
        for key, margin, metric in keys:
            stream = state.streams.get(key)
            if stream is not None and not stream.windows:
                stream = None  # only what changed for everyone is kept so far (paired._carried)
            if stream is None and seen >= s.min_samples and c.metric != "class:":
                continue  # the candidate's devices do not report it
            v = _mean(c, key, metric, margin, stream, state, lim, alpha / len(keys))
            out.append(shadow_verdict(v, stream, state.confusion) if c.stage == Stage.SHADOW else v)
    return [_dry(v, s.dry_run) for v in out]


def _keys(c: Criterion, state: GateState, lim: GateLimits) -> list[tuple[str, float, str]]:
    """(stream key, margin, metric) of a row: one per class for the class rows."""
    margin = c.margin(lim)
    assert margin is not None
    if c.metric == "agree:":
        return [(f"{c.name}:{k}", margin, f"agree:{k}") for k in state.classes]
    if c.metric != "class:":
        return [(c.name, margin, c.metric)]
    if c.kind == Kind.RELATIVE:
        return [(f"{c.name}:{k}", margin, f"class:{k}") for k in state.classes]
    return [(f"{c.name}:{k}", margin, f"class:{k}") for k, _share in lim.expected_classes]


def _dry(v: Verdict, dry_run: tuple[str, ...]) -> Verdict:
    if v.criterion in dry_run or v.criterion.split(":", 1)[0] in dry_run:
        return Verdict(**{**v.__dict__, "dry_run": True})
    return v


def _shown(c: Criterion, x: float | None) -> float | None:
    """A number on the scale people read: latency in ms or as a ratio, not in logs."""
    if x is None or c.unit != Unit.LOG_MS:
        return x
    return math.exp(min(x, 700.0))


def _mean(
    c: Criterion,
    key: str,
    metric: str,
    margin: float,
    stream: Stream | None,
    state: GateState,
    lim: GateLimits,
    alpha: float,
) -> Verdict:
    s = lim.site
    if key == "invalid_metrics":
        margin = (state.baseline.invalid_share or 0.0) + margin
    samples: Mapping[str, int] = {}
    if stream is not None:
        samples = {
            "devices": len(stream.lever) or len(state.ran),
            "windows": stream.windows,
            "inferences": stream.inferences,
        }
    if stream is None or stream.windows < s.min_samples or stream.estimate is None:
        return Verdict(
            key, Answer.UNDECIDED, limit=_shown(c, margin), samples=samples, note="not enough data yet"
        )
    estimate = stream.estimate
    base = stream.cf / stream.d if c.kind == Kind.RELATIVE and c.form == "diff" else None
    variance = stream.variance(state.reference, metric, ratio=c.form == "ratio")
    if c.kind == Kind.ABSOLUTE and c.metric == "class:":
        variance = stream.variance({}, metric, ratio=True)
    j = judge_mean(
        estimate,
        variance,
        margin,
        tau=c.tau(margin),
        alpha=alpha,
        no_worse_alpha=s.no_worse_risk,
        higher_is_worse=c.higher_is_worse,
    )
    return Verdict(
        key,
        j.answer,
        _shown(c, estimate),
        _shown(c, base),
        _shown(c, margin),
        samples,
        "",
        lower=_shown(c, j.lower),
        upper=_shown(c, j.upper),
        e_value=round(j.e_value, 6),
    )


def _share(
    c: Criterion, state: GateState, lim: GateLimits, alpha: float, now: float | None
) -> Verdict | None:
    s = lim.site
    margin = c.margin(lim)
    assert margin is not None
    if c.name == "install_failures":
        tried = (state.downloaded | state.failed | state.ran) & state.admitted.keys()
        bad, n = len(state.failed & tried), len(tried)
        samples = {"devices": n, "failed": bad}
    else:
        runners = [d for d in state.ran if d in state.admitted and d not in state.failed]
        if now is None:
            return None
        bad = sum(1 for d in runners if now - state.heard.get(d, now) > s.silence_after_s)
        n = len(runners)
        samples = {"runners": n, "silent": bad}
    if n == 0:
        return None
    j = judge_share(bad, n, margin, alpha=alpha, no_worse_alpha=s.no_worse_risk)
    answer = j.answer
    if answer == Answer.UNDECIDED and j.estimate <= margin:
        # a wave of two devices can never show a share under a limit: these rows hold a wave only
        # while the share seen is over the limit (and halt once the evidence says worse)
        answer = Answer.NO_WORSE
    return Verdict(
        c.name, answer, j.estimate, None, margin, samples, "", lower=j.lower, upper=j.upper, e_value=j.e_value
    )


AGAINST = {"past": "against the site's past", "reference": "against the manifest's reference"}


def _drift(c: Criterion, f: FeatureDrift, state: GateState, lim: GateLimits) -> Verdict:
    """A feature of the gate's model: worse when its drift alert was raised since the gate opened.
    An alert raised before is the site's, not this candidate's: no worse, and the note says so."""
    since = f.raised_at is not None and f.raised_at >= state.opened_at
    note = AGAINST.get(f.against, f"against {f.against}")
    if f.raised_at is not None and not since:
        note += "; alert raised before the gate opened"
    answer = Answer.WORSE if since else Answer.NO_WORSE
    return Verdict(f"{c.name}:{f.feature}", answer, f.psi, None, c.margin(lim), {}, note)
