"""The gate state machine: opening, controls, and one step (evidence in, verdicts, halt or advance)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

from gateway.core.figures import Figures
from gateway.core.gates.criteria import ABSOLUTE, evaluate
from gateway.core.gates.evidence import take_evidence
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
from gateway.core.settings import GateSettings
from gateway.core.waves import admit
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
    fresh = admit(
        state.deployment,
        eligible,
        state.admitted,
        settings.waves,
        wave,
        min_devices=settings.min_devices_per_wave,
        order_attr=settings.wave_order,
    )
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
) -> tuple[GateState, list[Decision]]:
    """A new gate with its first wave judged at once (admitted from ``eligible``), unless it opens
    held (safe mode), when nobody is admitted until a release. ``running``: devices already on it."""
    log = _Log(now)
    state = dataclasses.replace(
        new_gate(deployment, model_id, version, baseline_version, settings, now),
        sha256=sha256,
        preexisting=running,
    )
    base = f"baseline {baseline_version}" if baseline_version else "first version at this site, no baseline"
    if held_by is not None:
        state = dataclasses.replace(state, held_by=held_by)
        return log(state, Action.HOLD, f"opened held ({base})", by=held_by), log.out
    state = _open_wave(state, 0, now, eligible, settings)
    state = log(
        state, Action.OPEN, f"{state.stage} stage, wave 0: {len(state.admitted)} device(s) admitted ({base})"
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
        opened_at=now,
        awaiting_approval=False,
    )
    return log(
        state, Action.CHANGED, f"the artifact changed to {sha256[:12]}: wave {state.wave} starts over"
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
        return f"wave {state.wave} of {what} is not waiting for approval (stage {state.stage})"
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
        state = dataclasses.replace(state, stage=Stage.WAVES, held_by=None, failed=frozenset())
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


def _passed(state: GateState, limits: GateLimits, verdicts: Sequence[Verdict], now: float) -> bool:
    """The wave soaked, warmed up, and its absolute checks had enough data (none failed: see step)."""
    s = limits.site
    if state.held_by is not None or state.awaiting_approval or now - state.opened_at < s.soak_s:
        return False
    wave_devices = [d for d, w in state.admitted.items() if w == state.wave]
    need = max(1, limits.warmup_inferences)
    warm = sum(1 for d in wave_devices if state.candidate.per_device.get(d, 0) >= need)
    if warm < math.ceil(s.warmup_share * len(wave_devices)):
        return False
    return not any(v.result == Result.INSUFFICIENT and v.criterion in ABSOLUTE for v in verdicts)


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
        what = "the shadow stage" if state.stage == Stage.SHADOW else f"wave {state.wave}"
        return log(state, Action.AWAIT, f"{what} passed; waiting for approval", verdicts)
    if state.stage == Stage.SHADOW:
        state = _open_wave(dataclasses.replace(state, stage=Stage.WAVES), 0, now, eligible, s)
        return log(state, Action.ADVANCE, "shadow stage passed: wave 0 switches to the candidate", verdicts)
    state = _open_wave(state, state.wave + 1, now, eligible, s)
    return log(
        state,
        Action.ADVANCE,
        f"wave {state.wave - 1} passed; wave {state.wave} opens with {len(state.admitted)} device(s)",
        verdicts,
    )


def _observe(state: GateState, verdicts: Sequence[Verdict], log: _Log) -> GateState:
    """Dry-run criteria that fail are recorded once per wave, never acted on."""
    new = [v for v in verdicts if v.dry_run and v.result == Result.FAIL and v.criterion not in state.observed]
    if not new:
        return state
    state = dataclasses.replace(state, observed=state.observed | {v.criterion for v in new})
    names = ", ".join(v.criterion for v in new)
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
) -> tuple[GateState, list[Decision]]:
    """Advance one gate. ``eligible``: the site's devices the cloud made eligible for this candidate."""
    s = limits.site
    log = _Log(now)
    for c in controls:
        state = _apply_control(state, c, now=now, eligible=eligible, settings=s, log=log)
    state = take_evidence(state, windows, events, now)
    if not state.active:
        return state, log.out
    if not state.admitted and state.held_by is None:
        # opened before any device was known: wave 0 takes them as they appear
        state = _open_wave(state, 0, now, eligible, s)
        if state.admitted:
            state = log(
                state, Action.OPEN, f"{state.stage} stage, wave 0: {len(state.admitted)} device(s) admitted"
            )
    verdicts = evaluate(state, limits, now)
    failing = [v for v in verdicts if v.result == Result.FAIL and not v.dry_run]
    if failing:
        names = ", ".join(v.criterion for v in failing)
        state = dataclasses.replace(
            state, stage=Stage.HALTED, awaiting_approval=False, first_bad_at=state.first_bad_at or now
        )
        return log(state, Action.HALT, f"failed: {names}", verdicts), log.out
    state = _observe(state, verdicts, log)
    if _passed(state, limits, verdicts, now):
        state = _advance(state, now, eligible, s, verdicts, log)
    return state, log.out
