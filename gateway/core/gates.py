"""Site canary gates as a pure state machine: windows, events, controls and ``now`` in; state and
decisions (with their evidence) out. No I/O, no clock, no sleeping.

One :class:`GateState` per candidate deployment at the site. Stages::

    shadow (optional) -> waves (wave 0, 1, ...) -> done
                 \\-> halted (a criterion failed) -> waves again only on release
                 \\-> aborted (by a person or the cloud)

Every version is gated, a model's first too (``gates.first_version = "waves"``): with no baseline
the criteria that need none still judge each wave (absolute limits, install failures, unknown rate,
the manifest's confidence floor and expected classes, silence and invalid metrics).

A wave is judged on the evidence gathered since it opened: the candidate's aggregate windows, and
the baseline's (the previous stable version, same cohorts, same windows). Any criterion that fails
with enough data halts at once; a wave advances only after its soak (``soak_s`` and the manifest's
``warmup_inferences`` reached by ``warmup_share`` of the wave's devices) and when no criterion fails
and the candidate's own absolute checks had enough data. Relative and behavioural checks need a
baseline; without one (a model's first version at the site) they say so ("insufficient") and do not
block. Latency across windows is the inference-weighted mean of the windows' p50 and p95.

Installation: a device counts as failed when its last event for the candidate is ``rolled_back``, or
``failed`` after it had downloaded the artifact. A download that fails and is retried (a bad link)
is not a failure of the model, and a wave whose devices cannot download does not reach its warm-up,
so the site is never pushed forward at once.

Silence and invalid metrics: a model that crashes the app stops its metrics, and an agent that counts
errors its own way sends metrics that are refused as invalid. A device that ran the candidate and
has not been heard (metrics, valid or not, or an event) for ``silence_after_s`` is silent; more than
``silent_max`` of the runners silent fails ``silence``. Invalid messages from devices on the
candidate, as a share of its messages, more than ``invalid_rise_max`` above the baseline's fails
``invalid_metrics``. Both need ``min_devices`` / ``min_samples`` before they judge.

Controls (:func:`control_refusal` says why one would do nothing): ``hold`` freezes the waves where
they are, ``release`` resumes a held gate or re-opens a halted one at its wave, ``abort`` is final,
``approve`` lets a wave that passed advance when ``approve_each_wave`` is on. Criteria named in
``dry_run`` are judged and recorded (action ``observe``) but never halt.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.core.figures import Figures
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings
from gateway.core.waves import admit
from gateway.core.window import WindowStats

MAX_DECISIONS = 500


class Stage(enum.StrEnum):
    SHADOW = "shadow"
    WAVES = "waves"
    HALTED = "halted"
    ABORTED = "aborted"
    DONE = "done"


STOPPED = (Stage.HALTED, Stage.ABORTED)  # the candidate is offered to nobody


class Action(enum.StrEnum):
    OPEN = "open"
    ADVANCE = "advance"
    AWAIT = "await_approval"
    APPROVE = "approve"
    DONE = "done"
    HALT = "halt"
    OBSERVE = "observe"  # a dry-run criterion failed: recorded, not acted on
    HOLD = "hold"
    RELEASE = "release"
    ABORT = "abort"
    CHANGED = "artifact_changed"


CONTROLS = (Action.HOLD, Action.RELEASE, Action.ABORT, Action.APPROVE)


class Result(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INSUFFICIENT = "insufficient"


@dataclass(frozen=True)
class GateLimits:
    max_cpu_percent: float | None
    max_ram_percent: float | None
    max_latency_ms: float | None
    max_error_rate: float | None
    max_temperature_c: float
    warmup_inferences: int
    site: GateSettings
    min_confidence: float | None = None
    expected_classes: tuple[tuple[str, float], ...] = ()

    @classmethod
    def of(cls, health: HealthChecks, site: GateSettings) -> GateLimits:
        def tighter(cloud: float | None, local: float) -> float | None:
            if local <= 0:
                return cloud
            return local if cloud is None else min(cloud, local)

        return cls(
            tighter(health.max_cpu_percent, site.max_cpu_percent),
            tighter(health.max_ram_percent, site.max_ram_percent),
            tighter(health.max_latency_ms, site.max_latency_ms),
            tighter(health.max_error_rate, site.max_error_rate),
            site.max_temperature_c,
            health.warmup_inferences,
            site,
            health.min_confidence,
            health.expected_classes,
        )


@dataclass(frozen=True)
class Verdict:
    criterion: str
    result: str  # a Result
    candidate: float | None = None
    baseline: float | None = None
    limit: float | None = None
    samples: Mapping[str, int] = field(default_factory=dict)
    note: str = ""
    dry_run: bool = False  # named in gates.dry_run: recorded, never halting


@dataclass(frozen=True)
class Decision:
    at: float
    deployment: str
    wave: int
    stage: str
    action: str  # an Action
    reason: str
    verdicts: tuple[Verdict, ...] = ()
    by: str = "gate"

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "verdicts": [dataclasses.asdict(v) for v in self.verdicts]}


@dataclass(frozen=True)
class Event:
    device_id: str
    event: str  # downloaded, verified, activated, healthy, rolled_back, failed
    version: str | None


@dataclass(frozen=True)
class Control:
    action: str  # hold | release | abort | approve
    by: str  # "operator:<who>" or "cloud"
    why: str = ""


@dataclass(frozen=True)
class GateState:
    deployment: str  # model@version
    model_id: str
    version: str
    baseline_version: str | None
    stage: str  # a Stage
    wave: int = 0
    opened_at: float = 0.0
    held_by: str | None = None
    admitted: Mapping[str, int] = field(default_factory=dict)  # device -> wave that admitted it
    ran: frozenset[str] = frozenset()  # activated or reported metrics on the candidate
    downloaded: frozenset[str] = frozenset()
    failed: frozenset[str] = frozenset()
    candidate: Figures = field(default_factory=Figures)
    baseline: Figures = field(default_factory=Figures)
    decisions: tuple[Decision, ...] = ()
    first_bad_at: float | None = None
    sha256: str = ""  # the candidate's artifact when the gate opened
    awaiting_approval: bool = False  # the wave passed; approve_each_wave holds it for a person
    heard: Mapping[str, float] = field(default_factory=dict)  # runner -> last heard on the candidate
    observed: frozenset[str] = frozenset()  # dry-run criteria already recorded in this wave
    # devices that already ran this version when the gate opened (installed some other way): they
    # inform the evidence but were not exposed by this gate, so they are never rolled back by it
    preexisting: frozenset[str] = frozenset()

    @property
    def active(self) -> bool:
        return self.stage in (Stage.SHADOW, Stage.WAVES)

    @property
    def stopped(self) -> bool:
        return self.stage in STOPPED

    @property
    def rollback_set(self) -> frozenset[str]:
        """Devices to send back to the previous stable version (after a halt or an abort)."""
        return self.ran if self.stopped else frozenset()


def new_gate(
    deployment: str,
    model_id: str,
    version: str,
    baseline_version: str | None,
    settings: GateSettings,
    now: float,
) -> GateState:
    stage = Stage.SHADOW if settings.shadow and baseline_version else Stage.WAVES
    return GateState(deployment, model_id, version, baseline_version, stage, 0, now)


# -- criteria ---------------------------------------------------------------------------------------


class _Judge:
    """Collects verdicts; a check with no limit is skipped, one without enough data is insufficient."""

    def __init__(self, dry_run: Iterable[str]) -> None:
        self.out: list[Verdict] = []
        self.dry_run = frozenset(dry_run)

    def add(self, v: Verdict) -> None:
        if v.criterion in self.dry_run or v.criterion.split(":", 1)[0] in self.dry_run:
            v = dataclasses.replace(v, dry_run=True)
        self.out.append(v)

    def check(
        self,
        name: str,
        value: float | None,
        limit: float | None,
        ok_data: bool,
        samples: Mapping[str, int],
        *,
        base: float | None = None,
        note: str = "",
        below: bool = False,  # the limit is a floor, not a ceiling
    ) -> None:
        if limit is None:
            return
        if not ok_data or value is None:
            self.add(
                Verdict(name, Result.INSUFFICIENT, value, base, limit, samples, note or "not enough data yet")
            )
            return
        bad = value < limit if below else value > limit
        self.add(Verdict(name, Result.FAIL if bad else Result.PASS, value, base, limit, samples, note))


def evaluate(state: GateState, lim: GateLimits, now: float | None = None) -> list[Verdict]:
    """Every criterion on the evidence of the current wave; ``now`` judges silence."""
    s = lim.site
    c = state.candidate
    n = {"devices": len(c.devices), "samples": c.samples, "inferences": c.inferences}
    enough = len(c.devices) >= s.min_devices and c.samples >= s.min_samples
    j = _Judge(s.dry_run)
    # absolute, from the manifest's health checks tightened by the site
    j.check("max_cpu_percent", c.cpu, lim.max_cpu_percent, enough, n)
    j.check("max_ram_percent", c.ram, lim.max_ram_percent, enough, n)
    j.check("max_latency_ms", c.latency_p95, lim.max_latency_ms, enough, n, note="p95")
    j.check(
        "max_error_rate", c.error_rate, lim.max_error_rate, enough and c.inferences >= s.min_inferences, n
    )
    j.check("max_temperature_c", c.temp_max, lim.max_temperature_c, enough and c.temp_max is not None, n)
    # behaviour that needs no baseline
    j.check("unknown_rate", c.unknown_rate, s.unknown_rate_max, enough and c.unknown_rate is not None, n)
    j.check("min_confidence", c.confidence, lim.min_confidence, enough, n, below=True)
    _expected_classes(j, c, lim, enough, n)
    _relative(j, state, lim, enough, n)
    _installation(j, state, s)
    _silence(j, state, s, now)
    _invalid(j, state, s)
    return j.out


def _expected_classes(j: _Judge, c: Figures, lim: GateLimits, enough: bool, n: Mapping[str, int]) -> None:
    """The manifest's ``expected_classes``: each must keep a share of the detections (a list form,
    share 0, must be seen at all)."""
    s = lim.site
    total = sum(c.classes.values())
    for name, share in lim.expected_classes:
        floor = share * s.class_collapse_ratio if share > 0 else 0.0
        expected = max(share, s.class_floor) * total
        seen = c.classes.get(name, 0)
        observed = seen / total if total else None
        samples = {**n, "expected": int(expected), "seen": seen}
        if not enough or observed is None or expected < s.min_expected_class_count:
            j.add(Verdict(f"expected_class:{name}", Result.INSUFFICIENT, observed, share, floor, samples))
            continue
        bad = seen == 0 if share == 0 else observed < floor
        j.add(
            Verdict(
                f"expected_class:{name}",
                Result.FAIL if bad else Result.PASS,
                observed,
                share,
                floor,
                samples,
                "the manifest expects this class",
            )
        )


def _relative(j: _Judge, state: GateState, lim: GateLimits, enough: bool, n: Mapping[str, int]) -> None:
    """Against the baseline (same cohorts, same windows): latency, errors, CPU, temperature, classes,
    confidence. Without one they say so and do not block."""
    s = lim.site
    c, b = state.candidate, state.baseline
    if b.samples == 0:
        note = "no devices of these cohorts on the previous stable version"
        if state.baseline_version is None:
            note = "a model's first version at this site: no baseline"
        j.add(Verdict("baseline", Result.INSUFFICIENT, note=note))
        return
    both = {
        **n,
        "baseline_devices": len(b.devices),
        "baseline_samples": b.samples,
        "baseline_inferences": b.inferences,
    }
    rel_ok = enough and len(b.devices) >= s.min_devices and b.samples >= s.min_samples
    ratio = c.latency_p50 / b.latency_p50 if c.latency_p50 is not None and b.latency_p50 else None
    j.check(
        "latency_ratio",
        ratio,
        s.latency_ratio_max,
        rel_ok,
        both,
        base=1.0,
        note="candidate p50 / baseline p50",
    )
    rise = c.error_rate - b.error_rate if c.error_rate is not None and b.error_rate is not None else None
    inf_ok = rel_ok and c.inferences >= s.min_inferences and b.inferences >= s.min_inferences
    j.check("error_rate_rise", rise, s.error_rate_rise_max, inf_ok, both, base=b.error_rate)
    cpu_rise = c.cpu - b.cpu if c.cpu is not None and b.cpu is not None else None
    j.check("cpu_rise_percent", cpu_rise, s.cpu_rise_max_percent, rel_ok, both, base=b.cpu)
    if c.temp is not None and b.temp is not None:
        j.check("temperature_rise_c", c.temp - b.temp, s.temperature_rise_max_c, rel_ok, both, base=b.temp)
    _class_collapse(j, c, b, s, rel_ok, both)
    drop = b.confidence - c.confidence if b.confidence is not None and c.confidence is not None else None
    j.check("confidence_drop", drop, s.confidence_drop_max, rel_ok, both, base=b.confidence)


def _class_collapse(
    j: _Judge, c: Figures, b: Figures, s: GateSettings, rel_ok: bool, both: Mapping[str, int]
) -> None:
    """Classes that matter in the baseline must not collapse (the missing-class story)."""
    b_total, c_total = sum(b.classes.values()), sum(c.classes.values())
    if not (b_total and c_total):
        return
    for name, count in sorted(b.classes.items()):
        share = count / b_total
        if share < s.class_floor:
            continue
        expected = share * c_total
        c_share = c.classes.get(name, 0) / c_total
        floor = share * s.class_collapse_ratio
        samples = {**both, "expected": int(expected)}
        if expected < s.min_expected_class_count or not rel_ok:
            j.add(Verdict(f"class:{name}", Result.INSUFFICIENT, c_share, share, floor, samples))
        else:
            result = Result.FAIL if c_share < floor else Result.PASS
            j.add(Verdict(f"class:{name}", result, c_share, share, floor, samples, "share must not collapse"))


def _installation(j: _Judge, state: GateState, s: GateSettings) -> None:
    wave_devices = [d for d, w in state.admitted.items() if w == state.wave]
    if not wave_devices:
        return
    failed = sum(1 for d in wave_devices if d in state.failed)
    share = failed / len(wave_devices)
    ok = len(wave_devices) >= s.min_devices or failed >= s.min_devices
    result = (Result.FAIL if share > s.install_failure_max else Result.PASS) if ok else Result.INSUFFICIENT
    j.add(
        Verdict(
            "install_failures",
            result,
            share,
            None,
            s.install_failure_max,
            {"wave_devices": len(wave_devices), "failed": failed},
        )
    )


def _silence(j: _Judge, state: GateState, s: GateSettings, now: float | None) -> None:
    """Runners of the candidate (admitted, activated or reporting) not heard for silence_after_s."""
    runners = [d for d in state.ran if d in state.admitted and d not in state.failed]
    if now is None or not runners:
        return
    silent = sum(1 for d in runners if now - state.heard.get(d, now) > s.silence_after_s)
    share = silent / len(runners)
    samples = {"runners": len(runners), "silent": silent}
    ok = len(runners) >= s.min_devices or silent >= s.min_devices
    result = (Result.FAIL if share > s.silent_max else Result.PASS) if ok else Result.INSUFFICIENT
    note = f"not heard for {s.silence_after_s:g} s after running the candidate"
    j.add(Verdict("silence", result, share, None, s.silent_max, samples, note))


def _invalid(j: _Judge, state: GateState, s: GateSettings) -> None:
    c, b = state.candidate, state.baseline
    share = c.invalid_share
    if share is None or (c.invalid == 0 and c.samples == 0):
        return
    base = b.invalid_share or 0.0
    samples = {
        "messages": c.samples + c.invalid,
        "invalid": c.invalid,
        "baseline_messages": b.samples + b.invalid,
    }
    ok = c.samples + c.invalid >= s.min_samples
    result = (
        (Result.FAIL if share - base > s.invalid_rise_max else Result.PASS) if ok else Result.INSUFFICIENT
    )
    note = "share of messages refused as invalid, above the baseline's"
    j.add(Verdict("invalid_metrics", result, share, base, base + s.invalid_rise_max, samples, note))


# -- the state machine ---------------------------------------------------------------------------------


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


def _take_evidence(
    state: GateState, windows: Sequence[WindowStats], events: Iterable[Event], now: float
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
    return dataclasses.replace(
        state,
        ran=frozenset(ran),
        downloaded=frozenset(downloaded),
        failed=frozenset(failed),
        candidate=ev_c,
        baseline=ev_b,
        heard=heard,
    )


ABSOLUTE = ("max_cpu_percent", "max_ram_percent", "max_latency_ms", "max_error_rate")


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
    state = _take_evidence(state, windows, events, now)
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
