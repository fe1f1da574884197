"""The gate state machine: opening, controls, and one step (evidence in, verdicts, halt or advance)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

from gateway.core.figures import Figures
from gateway.core.gates.criteria import evaluate
from gateway.core.gates.evidence import take_evidence
from gateway.core.gates.levels import MIN_WINDOWS, pooled
from gateway.core.gates.paired import judged_classes
from gateway.core.gates.table import Kind, family
from gateway.core.gates.values import (
    CONTROLS,
    MAX_DECISIONS,
    Action,
    Control,
    Decision,
    Event,
    GateLimits,
    GateState,
    Result,
    Stage,
    Verdict,
    new_gate,
)
from gateway.core.gates.words import name, say_short
from gateway.core.settings import GateSettings
from gateway.core.waves import admit, first_wave
from gateway.core.window import WindowStats


class _Log:
    """The decisions of one transition; each also goes into the gate's own bounded history."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.out: list[Decision] = []

    def __call__(
        self, st: GateState, action: Action, reason: str, verdicts: Sequence[Verdict] = (), by: str = "gate"
    ) -> GateState:
        d = Decision(self.now, st.deployment, st.wave, st.stage, action, reason, tuple(verdicts), by)
        self.out.append(d)
        return dataclasses.replace(st, decisions=(*st.decisions, d)[-MAX_DECISIONS:])


def _open_wave(
    state: GateState, wave: int, now: float, eligible: Mapping[str, Mapping[str, str]], settings: GateSettings
) -> GateState:
    m, order, plan = settings.min_devices_per_wave, settings.wave_order, settings.waves
    if wave == 0:
        enough = _enough(state, settings)
        fresh = first_wave(
            state.deployment, eligible, state.admitted, plan, min_devices=m, order_attr=order, enough=enough
        )
    else:
        fresh = admit(state.deployment, eligible, state.admitted, plan, wave, min_devices=m, order_attr=order)
    return dataclasses.replace(
        state,
        wave=wave,
        opened_at=now,
        admitted={**state.admitted, **fresh},
        candidate=Figures(),
        baseline=Figures(),
        awaiting_approval=False,
        observed=frozenset(),
    )


def _enough(state: GateState, s: GateSettings) -> Callable[[Sequence[str]], bool]:
    """Whether a first wave's devices make errors enough on the baseline (pooled, from their own
    levels) for a rise in them past ``error_rate_rise_max`` to show: at least
    ``first_wave_error_level`` times it (a wave of quiet cameras cannot tell x3 from the margin)."""
    need = s.first_wave_error_level * s.error_rate_rise_max
    if state.baseline_version is None or need <= 0:
        return lambda _wave: True

    def enough(wave: Sequence[str]) -> bool:
        level = pooled(state.reference, wave, "errors")
        return level is None or level >= need

    return enough


def open_gate(
    deployment: str,
    model_id: str,
    version: str,
    baseline_version: str | None,
    *,
    sha256: str,
    settings: GateSettings,
    now: float,
    eligible: Mapping[str, Mapping[str, str]],
    held_by: str | None = None,
    running: frozenset[str] = frozenset(),
    reference: Mapping[str, Mapping[str, tuple[float, ...]]] | None = None,
) -> tuple[GateState, list[Decision]]:
    """A new gate with its first wave judged at once (admitted from ``eligible``), unless it opens
    held (safe mode), when nobody is admitted until a release. ``running``: devices already on it;
    ``reference``: every device's own level on the baseline now (what it is compared with)."""
    log = _Log(now)
    ref = dict(reference or {}) if baseline_version else {}
    state = dataclasses.replace(
        new_gate(deployment, model_id, version, baseline_version, settings, now),
        sha256=sha256,
        preexisting=running,
        reference=ref,
        classes=judged_classes(ref, settings.class_floor),
    )
    base = f"baseline {baseline_version}" if baseline_version else "first version at this site, no baseline"
    if held_by is not None:
        state = dataclasses.replace(state, held_by=held_by)
        return log(state, Action.HOLD, f"opened held ({base})", by=held_by), log.out
    if not _reference_ready(state, eligible):
        w = settings.reference_wait_s
        wait = f"{w:.0f} s" if w < 120 else f"{w / 60:.0f} min"
        return log(
            state,
            Action.WAIT_REFERENCE,
            f"waiting for the devices' own levels on {baseline_version} (at most {wait}) before wave 1 ({base})",
        ), log.out
    state = _open_wave(state, 0, now, eligible, settings)
    state = log(
        state, Action.OPEN, f"{state.stage} stage, wave 1: {len(state.admitted)} device(s) admitted ({base})"
    )
    return state, log.out


def _reference_ready(state: GateState, eligible: Mapping[str, Mapping[str, str]]) -> bool:
    """A relative comparison needs levels on the baseline: of two devices (one to switch, one to
    stay), or of every eligible one at a smaller site. While the baseline's devices report but their
    levels are not yet mature (a fresh gateway), wave 1 waits for them."""
    if state.baseline_version is None or not any(d in eligible for d in state.reference):
        return True  # a first version, or no metrics on the baseline at all: nothing to wait for
    with_level = sum(1 for d, metrics in state.reference.items() if d in eligible and _has_level(metrics))
    return with_level >= min(2, len(eligible))


def _has_level(metrics: Mapping[str, tuple[float, ...]]) -> bool:
    return any(lv[5] >= MIN_WINDOWS for lv in metrics.values())


def _refresh_reference(
    state: GateState, reference: Mapping[str, Mapping[str, tuple[float, ...]]] | None, settings: GateSettings
) -> GateState:
    """Before wave 1 opens, the gate takes the site's newest levels (a fresh gateway gathers them)."""
    if state.admitted or state.baseline_version is None or reference is None or reference is state.reference:
        return state
    ref = dict(reference)
    return dataclasses.replace(state, reference=ref, classes=judged_classes(ref, settings.class_floor))


def fill_wave(
    state: GateState, now: float, eligible: Mapping[str, Mapping[str, str]], settings: GateSettings
) -> tuple[GateState, list[Decision]]:
    """A device asks while its gate's open wave has free places (the site has grown since the wave
    opened, or it opened before any device was known): the wave admits, in rank order, up to what it
    admits at the site's size now. The first device at a new site gets its first model at once."""
    log = _Log(now)
    if not state.active or state.held_by is not None or state.awaiting_approval:
        return state, log.out
    if not state.admitted and not (
        _reference_ready(state, eligible) or now - state.opened_at >= settings.reference_wait_s
    ):
        return state, log.out
    fresh = admit(
        state.deployment,
        eligible,
        state.admitted,
        settings.waves,
        state.wave,
        min_devices=settings.min_devices_per_wave,
        order_attr=settings.wave_order,
    )
    if not fresh:
        return state, log.out
    first = not state.admitted
    state = dataclasses.replace(state, admitted={**state.admitted, **fresh})
    if first:
        state = log(
            state, Action.OPEN, f"{state.stage} stage, wave {state.wave + 1}: {len(fresh)} device(s) admitted"
        )
    return state, log.out


def artifact_changed(state: GateState, sha256: str, now: float) -> tuple[GateState, list[Decision]]:
    """The cloud re-signed the same version with other bytes: the wave's evidence and soak start
    over; who is admitted stays (the same devices fetch the new bytes, verified end to end)."""
    log = _Log(now)
    state = dataclasses.replace(
        state,
        sha256=sha256,
        candidate=Figures(),
        baseline=Figures(),
        streams={},
        opened_at=now,
        awaiting_approval=False,
    )
    return log(
        state, Action.CHANGED, f"the artifact changed to {sha256[:12]}: wave {state.wave + 1} starts over"
    ), log.out


def control_refusal(state: GateState, action: str) -> str | None:
    """Why a control would do nothing (so the operator is told, and nothing is logged), or None."""
    if action not in CONTROLS:
        return f"unknown control {action!r}: hold, release, abort or approve"
    what = state.deployment
    if state.stage == Stage.ABORTED:
        return f"{what} was aborted, and an abort is final: publish a new version to try again"
    if action == Action.HOLD and not state.active:
        return f"{what} is {state.stage}: there is no rollout to hold"
    if action == Action.HOLD and state.held_by is not None:
        return f"{what} is already held by {state.held_by}"
    if action == Action.RELEASE and state.stage != Stage.HALTED and state.held_by is None:
        return f"{what} is {state.stage}, not held or halted: nothing to release"
    if action == Action.APPROVE and not state.awaiting_approval:
        return f"wave {state.wave + 1} of {what} is not waiting for approval (stage {state.stage})"
    if action == Action.APPROVE and state.held_by is not None:
        return f"{what} is held by {state.held_by}: release it first"
    return None


def _apply_control(
    state: GateState,
    c: Control,
    *,
    now: float,
    eligible: Mapping[str, Mapping[str, str]],
    settings: GateSettings,
    log: _Log,
) -> GateState:
    if control_refusal(state, c.action) is not None:
        return state
    if c.action == Action.HOLD:
        return log(dataclasses.replace(state, held_by=c.by), Action.HOLD, c.why or "held", by=c.by)
    if c.action == Action.ABORT:
        state = dataclasses.replace(state, stage=Stage.ABORTED, awaiting_approval=False)
        return log(state, Action.ABORT, c.why or "aborted", by=c.by)
    if c.action == Action.APPROVE:
        state = log(dataclasses.replace(state, awaiting_approval=False), Action.APPROVE, c.why, by=c.by)
        return _advance(state, now, eligible, settings, (), log, approved=True)
    if state.stage == Stage.HALTED:
        # a person overrode the evidence: it starts over (the stated rate is the gate's, not theirs)
        state = dataclasses.replace(state, stage=Stage.WAVES, held_by=None, failed=frozenset(), streams={})
        state = _open_wave(state, state.wave, now, eligible, settings)
        return log(state, Action.RELEASE, c.why or "released after a halt", by=c.by)
    state = dataclasses.replace(state, held_by=None, opened_at=now)
    return log(state, Action.RELEASE, c.why or "released", by=c.by)


def apply_controls(
    state: GateState,
    controls: Iterable[Control],
    *,
    now: float,
    eligible: Mapping[str, Mapping[str, str]],
    settings: GateSettings,
) -> tuple[GateState, list[Decision]]:
    """Controls alone, at once (an operator's or the cloud's); a control that would do nothing
    (see :func:`control_refusal`) is skipped."""
    log = _Log(now)
    for c in controls:
        state = _apply_control(state, c, now=now, eligible=eligible, settings=settings, log=log)
    return state, log.out


def _soaked(state: GateState, limits: GateLimits, now: float) -> bool:
    """The wave soaked its shortest soak and warmed up (and nobody holds it)."""
    s = limits.site
    if state.held_by is not None or state.awaiting_approval or now - state.opened_at < s.soak_min_s:
        return False
    wave_devices = [d for d, w in state.admitted.items() if w == state.wave]
    need = max(1, limits.warmup_inferences)
    warm = sum(1 for d in wave_devices if state.candidate.per_device.get(d, 0) >= need)
    return warm >= math.ceil(s.warmup_share * len(wave_devices))


def _undecided(verdicts: Sequence[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.result != Result.NO_WORSE and not v.dry_run]


def _advance(
    state: GateState,
    now: float,
    eligible: Mapping[str, Mapping[str, str]],
    s: GateSettings,
    verdicts: Sequence[Verdict],
    log: _Log,
    *,
    approved: bool = False,
) -> GateState:
    """The wave passed: finish, wait for a person's approval, or open the next wave."""
    if state.stage != Stage.SHADOW and (
        state.wave + 1 >= len(s.waves) or len(state.admitted) >= len(eligible)
    ):
        return log(dataclasses.replace(state, stage=Stage.DONE), Action.DONE, "every wave passed", verdicts)
    if s.approve_each_wave and not approved:
        state = dataclasses.replace(state, awaiting_approval=True)
        what = "the shadow stage" if state.stage == Stage.SHADOW else f"wave {state.wave + 1}"
        return log(state, Action.AWAIT, f"{what} passed; waiting for approval", verdicts)
    if state.stage == Stage.SHADOW:
        state = _open_wave(dataclasses.replace(state, stage=Stage.WAVES), 0, now, eligible, s)
        return log(state, Action.ADVANCE, "shadow stage passed: wave 1 switches to the candidate", verdicts)
    state = _open_wave(state, state.wave + 1, now, eligible, s)
    return log(
        state,
        Action.ADVANCE,
        f"wave {state.wave} passed; wave {state.wave + 1} opens with {len(state.admitted)} device(s)",
        verdicts,
    )


def _observe(state: GateState, verdicts: Sequence[Verdict], log: _Log) -> GateState:
    """Dry-run criteria that fail are recorded once per wave, never acted on."""
    new = [v for v in verdicts if v.dry_run and v.result == Result.FAIL and v.criterion not in state.observed]
    if not new:
        return state
    state = dataclasses.replace(state, observed=state.observed | {v.criterion for v in new})
    names = ", ".join(name(v) for v in new)
    return log(state, Action.OBSERVE, f"dry run: would have halted on {names}", new)


def step(
    state: GateState,
    *,
    now: float,
    limits: GateLimits,
    eligible: Mapping[str, Mapping[str, str]],
    windows: Sequence[WindowStats] = (),
    events: Iterable[Event] = (),
    controls: Iterable[Control] = (),
    reference: Mapping[str, Mapping[str, tuple[float, ...]]] | None = None,
) -> tuple[GateState, list[Decision]]:
    """Advance one gate. ``reference``: the site's levels on the baseline now. ``eligible``: the site's devices the cloud made eligible for this candidate."""
    s = limits.site
    log = _Log(now)
    for c in controls:
        state = _apply_control(state, c, now=now, eligible=eligible, settings=s, log=log)
    state = take_evidence(state, windows, events, now, limits)
    if not state.active:
        return state, log.out
    state = _refresh_reference(state, reference, s)
    waited = now - state.opened_at >= s.reference_wait_s
    if not state.admitted and state.held_by is None and (_reference_ready(state, eligible) or waited):
        # opened before any device was known, or before their levels: wave 1 takes them now
        state = _open_wave(state, 0, now, eligible, s)
        if state.admitted:
            ready = _reference_ready(state, eligible)
            if not ready:  # no pair of levels: a relative row could never be judged, only hold waves
                state = dataclasses.replace(state, reference={}, classes=())
            note = "" if ready else " (no levels on the baseline: absolute limits only)"
            state = log(
                state,
                Action.OPEN,
                f"{state.stage} stage, wave 1: {len(state.admitted)} device(s) admitted{note}",
            )
    if not state.admitted:
        return state, log.out
    verdicts = evaluate(state, limits, now)
    failing = [v for v in verdicts if v.result == Result.WORSE and not v.dry_run]
    if failing:
        names = ", ".join(name(v) for v in failing)
        state = dataclasses.replace(
            state, stage=Stage.HALTED, awaiting_approval=False, first_bad_at=state.first_bad_at or now
        )
        return log(state, Action.HALT, f"worse: {names}", verdicts), log.out
    state = _observe(state, verdicts, log)
    if not _soaked(state, limits, now):
        return state, log.out
    waiting = _undecided(verdicts)
    if len(state.admitted) >= len(eligible):
        # nobody is left on the baseline to compare with: the relative rows cannot learn more,
        # and the last wave finishes on the others (a relative row that says worse still halts)
        waiting = [v for v in waiting if (row := family(v.criterion)) is None or row.kind != Kind.RELATIVE]
    if not waiting:
        state = _advance(state, now, eligible, s, verdicts, log)
    elif now - state.opened_at >= s.soak_max_s and not state.awaiting_approval:
        state = dataclasses.replace(state, awaiting_approval=True)
        names = ", ".join(say_short(v) for v in waiting)
        state = log(
            state,
            Action.AWAIT,
            f"wave {state.wave + 1} still undecided after {s.soak_max_s / 3600:g} h ({names}): "
            "`ota-gateway gate approve` advances it, `abort` stops it",
            verdicts,
        )
    return state, log.out
