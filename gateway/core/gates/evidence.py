"""What a gate learns from install events and the aggregate windows of its candidate and baseline."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from gateway.core.gates.paired import take_windows
from gateway.core.gates.shadow import add_pairs
from gateway.core.gates.values import Event, GateLimits, GateState, Stage
from gateway.core.window import WindowStats


def take_evidence(
    state: GateState,
    windows: Sequence[WindowStats],
    events: Iterable[Event],
    now: float,
    limits: GateLimits | None = None,
) -> GateState:
    """Install events, and the candidate's windows (shadow ones in the shadow stage) with the
    baseline's windows of the same slices."""
    ran, downloaded, failed = set(state.ran), set(state.downloaded), set(state.failed)
    heard = dict(state.heard)
    for e in events:
        if e.version != state.version:
            continue
        if e.event in ("downloaded", "verified"):
            downloaded.add(e.device_id)
            failed.discard(e.device_id)
        elif e.event in ("activated", "healthy"):
            if e.device_id not in state.preexisting:
                ran.add(e.device_id)
            failed.discard(e.device_id)
        elif e.event == "rolled_back" or (e.event == "failed" and e.device_id in downloaded):
            failed.add(e.device_id)
        if e.device_id in ran:
            heard[e.device_id] = now
    shadow = state.stage == Stage.SHADOW
    cand = [
        w
        for w in windows
        if w.key.model_id == state.model_id
        and w.key.model_version == state.version
        and w.key.shadow == shadow
    ]
    slices = {(w.start, w.key.cohort) for w in cand}
    ev_c, ev_b = state.candidate, state.baseline
    for w in cand:
        ev_c = ev_c.add_window(w)
        if not shadow:
            ran.update(d for d in w.device_inferences if d not in state.preexisting)
    for w in windows:
        if w.key.model_id == state.model_id:  # heard on any version: one that moved on is not silent
            for d in (*w.device_inferences, *w.device_invalid):
                if d in ran:
                    heard[d] = max(heard.get(d, w.end), w.end)
        if (
            w.key.model_id == state.model_id
            and w.key.model_version == state.baseline_version
            and not w.key.shadow
            and (w.start, w.key.cohort) in slices
        ):
            ev_b = ev_b.add_window(w)
    streams = state.streams
    if windows and state.active:
        streams = take_windows(
            streams,
            windows,
            model_id=state.model_id,
            candidate=state.version,
            baseline=state.baseline_version,
            shadow=shadow,
            reference=state.reference,
            classes=state.classes,
            expected=limits.expected_classes if limits is not None else (),
        )
    return dataclasses.replace(
        state,
        streams=streams,
        confusion=add_pairs(state.confusion, cand) if shadow and cand else state.confusion,
        ran=frozenset(ran),
        downloaded=frozenset(downloaded),
        failed=frozenset(failed),
        candidate=ev_c,
        baseline=ev_b,
        heard=heard,
    )
