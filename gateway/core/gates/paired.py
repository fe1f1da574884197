"""The evidence of a gate as paired comparisons: each device against its own past, what changed for
everyone taken out.

For a relative criterion and a window, each device on the candidate gives what it showed (``obs``
over ``den``: errors over inferences, a class over the detections, mean log latency over 1) and what
it would have shown on the baseline: its own level from before the gate opened
(:mod:`gateway.core.gates.levels`) moved by what moved every device still on the baseline in the
same window (difference in differences; when none of those reported in it, as when devices report
less often than a window and in step with each other, the last such change within
:data:`SHARED_MAX_AGE_S` stands in). With multiplicative time (``mult``: a busy night doubles
traffic and errors everywhere) the devices still on the baseline give
``g = sum(obs) / sum(level * den)``, and the counterfactual is ``level * g * den``; with additive
time (``add``: log latency, temperature, confidence) ``g = sum(obs - level * den) / sum(den)`` and
the counterfactual is ``(level + g) * den``. In the shadow stage a device runs both models on the
same frames, so its own active model's window is the counterfactual.

Each window is one observation of a :class:`Stream` (its devices summed, so what they share, the
window's ``g``, is in its variance), and each device's level error, which stays with every window of
that device, is added as its own term (``lever``: how much of the counterfactual leans on the level).
Absolute criteria sum the candidate's devices against a limit the same way. The judgement of the
streams is :mod:`gateway.core.gates.criteria`; the tests, :mod:`gateway.core.gates.sequential`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

from gateway.core.gates import levels as L
from gateway.core.gates.shadow import take_agreement
from gateway.core.gates.stream import Stream
from gateway.core.gates.table import ABSOLUTE, RELATIVE, Criterion
from gateway.core.window import DeviceWindow, WindowStats

Streams = Mapping[str, Stream]
Observed = Mapping[str, Mapping[str, tuple[float, float]]]  # device -> metric -> (obs, den) of a window
SHARED_MAX_AGE_S = 900.0  # how long what changed for everyone, last seen, stands for a window without it


def _merge(windows: Iterable[WindowStats]) -> dict[str, DeviceWindow]:
    out: dict[str, DeviceWindow] = {}
    for w in windows:
        out.update(w.device_windows)  # a device reports in one cohort group of a window
    return out


def _metrics(c: Criterion, classes: Sequence[str]) -> list[tuple[str, str]]:
    """(stream key, metric) of a row: one per judged class for the class rows."""
    if c.metric == "class:":
        return [(f"{c.name}:{k}", f"class:{k}") for k in classes]
    return [(c.name, c.metric)]


def _shared_change(
    c: Criterion,
    metric: str,
    cand: Observed,
    base: Observed,
    reference: L.Levels,
) -> float | None:
    """What moved every device still on the baseline in one window (``g``), or None when no such
    device with a level reported in it."""
    mult = c.time == "mult"
    top = bottom = 0.0
    for dev, obs in base.items():
        if dev in cand or metric not in obs:
            continue
        level = reference.get(dev, {}).get(metric)
        lv = L.value(level) if level is not None else None
        if lv is None:
            continue
        o, d = obs[metric]
        top += o if mult else o - lv * d
        bottom += lv * d if mult else d
    return top / bottom if bottom > 0 else None


def _relative_window(
    c: Criterion,
    metric: str,
    cand: Observed,
    base: Observed,
    reference: L.Levels,
    g: float | None,
) -> tuple[float, float, float, dict[str, float]] | None:
    """One window of a relative criterion: (num, den, counterfactual, lever) or None. ``g`` is what
    changed for everyone (None in the shadow stage, where each device's own active model is its
    counterfactual)."""
    mult = c.time == "mult"
    num = den = cf_sum = 0.0
    lever: dict[str, float] = {}
    for dev, obs in cand.items():
        if metric in obs:
            o, d = obs[metric]
        elif metric.startswith("class:") and (total := _detections(obs)) > 0:
            o, d = 0.0, total  # none of this class among the device's detections
        else:
            continue
        if g is None:
            own = base.get(dev, {}).get(metric)
            if own is None or own[1] <= 0:
                continue
            lv, slope, shift = own[0] / own[1], 0.0, 1.0 if mult else 0.0
        else:
            level = reference.get(dev, {}).get(metric)
            value = L.value(level) if level is not None else None
            if value is None:
                continue
            lv, slope, shift = value, (g * d if mult else d), g
        cf = lv * shift * d if mult else (lv + shift) * d
        if c.form == "ratio":
            num, den = num + o, den + cf
        else:
            num, den = num + o - cf, den + d
        cf_sum += cf
        if slope:
            lever[dev] = slope
    if den <= 0:
        return None
    return num, den, cf_sum, lever


def _carried(out: dict[str, Stream], key: str, start: float, g: float | None) -> float | None:
    """This window's ``g``, kept on the stream for the windows after it; or, when no device still
    on the baseline reported in this window, the last one seen within :data:`SHARED_MAX_AGE_S`
    (devices that report less often than a window, in step with each other, can leave a window
    with the candidate's devices alone: a first wave that is exactly one such group would
    otherwise never be compared at all)."""
    prior = out.get(key)
    if g is not None:
        out[key] = dataclasses.replace(prior or Stream(), shared=g, shared_at=start)
        return g
    if prior is not None and prior.shared is not None and 0 <= start - prior.shared_at <= SHARED_MAX_AGE_S:
        return prior.shared
    return None


def take_windows(
    streams: Streams,
    windows: Sequence[WindowStats],
    *,
    model_id: str,
    candidate: str,
    baseline: str | None,
    shadow: bool,
    reference: L.Levels,
    classes: Sequence[str],
    expected: Sequence[tuple[str, float]],
) -> Streams:
    """The candidate's windows (shadow ones in the shadow stage), each window start at once."""
    by_start: dict[float, tuple[list[WindowStats], list[WindowStats]]] = {}
    for w in windows:
        if w.key.model_id != model_id:
            continue
        if w.key.model_version == candidate and w.key.shadow == shadow:
            by_start.setdefault(w.start, ([], []))[0].append(w)
        elif w.key.model_version == baseline and not w.key.shadow:
            by_start.setdefault(w.start, ([], []))[1].append(w)
    if not by_start:
        return streams
    out = dict(streams)
    for start in sorted(by_start):
        cw, bw = by_start[start]
        cand_dw = _merge(cw)
        cand = {dev: L.observe(dw) for dev, dw in cand_dw.items()}
        inferences = sum(dw.inferences for dw in cand_dw.values())
        if baseline is not None and reference:
            base = {dev: L.observe(dw) for dev, dw in _merge(bw).items()}
            _relative(out, start, cand, base, reference, classes, shadow, inferences)
        if not cw:
            continue
        _absolute(out, cand, inferences, expected)
        if shadow:
            take_agreement(out, cand_dw, inferences, classes)
        invalid = sum(w.invalid for w in cw)
        messages = invalid + sum(w.samples for w in cw)
        if messages:
            out["invalid_metrics"] = out.get("invalid_metrics", Stream()).add(
                float(invalid), float(messages), 0.0, inferences, {}
            )
    return out


def _relative(
    out: dict[str, Stream],
    start: float,
    cand: Observed,
    base: Observed,
    reference: L.Levels,
    classes: Sequence[str],
    shadow: bool,
    inferences: int,
) -> None:
    """One window of every relative criterion, each device against its own level (or, in the
    shadow stage, against its own active model in the same window)."""
    for c in RELATIVE:
        for key, metric in _metrics(c, classes):
            g = (
                None
                if shadow
                else _carried(out, key, start, _shared_change(c, metric, cand, base, reference))
            )
            if not cand or (g is None and not shadow):
                continue  # no candidate device in it; or nothing says what changed for everyone
            got = _relative_window(c, metric, cand, base, reference, g)
            if got is not None:
                num, den, cf, lever = got
                out[key] = out.get(key, Stream()).add(num, den, cf, inferences, lever)


def _absolute(
    out: dict[str, Stream],
    cand: Observed,
    inferences: int,
    expected: Sequence[tuple[str, float]],
) -> None:
    for c in ABSOLUTE:
        if c.metric == "invalid":
            continue
        if c.metric == "class:":
            for name, share in expected:
                num = den = 0.0
                for obs in cand.values():
                    total = _detections(obs)
                    num += obs.get(f"class:{name}", (0.0, total))[0]
                    den += max(share, 1e-3) * total
                if den > 0:
                    key = f"{c.name}:{name}"
                    out[key] = out.get(key, Stream()).add(num, den, den, inferences, {})
            continue
        num = den = 0.0
        for obs in cand.values():
            if c.metric in obs:
                o, d = obs[c.metric]
                num, den = num + o, den + d
        if den > 0:
            out[c.name] = out.get(c.name, Stream()).add(num, den, 0.0, inferences, {})


def _detections(obs: Mapping[str, tuple[float, float]]) -> float:
    """A window's detections (the den of every class of it), 0 without class counts."""
    return next((v[1] for k, v in obs.items() if k.startswith("class:")), 0.0)


def judged_classes(reference: L.Levels, floor: float) -> tuple[str, ...]:
    """The classes that matter on the baseline (a pooled share of at least ``floor``): each is
    judged, so that a rare class that silently disappears is seen."""
    counts: dict[str, float] = {}
    for metrics in reference.values():
        for m, level in metrics.items():
            if m.startswith("class:"):
                counts[m[6:]] = counts.get(m[6:], 0.0) + level[1]
    pooled = sum(counts.values())
    if pooled <= 0:
        return ()
    return tuple(sorted(k for k, v in counts.items() if v / pooled >= floor))
