"""Site canary gates as a pure state machine: windows, events, controls and ``now`` in; state and
decisions (with their evidence) out. No I/O, no clock, no sleeping.

One :class:`GateState` per candidate deployment at the site. Stages::

    shadow (optional) -> waves (wave 0, 1, ...) -> done
                 \\-> halted (a criterion failed) -> waves again only on release
                 \\-> aborted (by a person or the cloud)

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
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.manifest import HealthChecks
from gateway.rollout.waves import admit
from gateway.settings import GateSettings
from gateway.telemetry.window import WindowStats

MAX_DECISIONS = 500


@dataclass(frozen=True)
class Limits:
    max_cpu_percent: float | None
    max_ram_percent: float | None
    max_latency_ms: float | None
    max_error_rate: float | None
    max_temperature_c: float
    warmup_inferences: int
    site: GateSettings

    @classmethod
    def of(cls, health: HealthChecks, site: GateSettings) -> Limits:
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
        )


@dataclass(frozen=True)
class Evidence:
    """Sums over windows, mergeable; figures are derived on demand."""

    devices: frozenset[str] = frozenset()
    samples: int = 0
    inferences: int = 0
    errors: int = 0
    lat50_w: float = 0.0  # sum of p50 * inferences
    lat95_w: float = 0.0
    lat_w: int = 0
    cpu_sum: float = 0.0
    cpu_n: int = 0
    ram_max: float | None = None
    ram_sum: float = 0.0
    ram_n: int = 0
    temp_sum: float = 0.0
    temp_n: int = 0
    temp_max: float | None = None
    classes: Mapping[str, int] = field(default_factory=dict)
    conf_sum: float = 0.0
    conf_w: int = 0
    unknown_sum: float = 0.0
    unknown_w: int = 0
    per_device: Mapping[str, int] = field(default_factory=dict)  # inferences per device

    def add(self, w: WindowStats) -> Evidence:
        weight = max(1, w.inferences)
        classes = dict(self.classes)
        for k, n in w.class_counts.items():
            classes[k] = classes.get(k, 0) + n
        per_device = dict(self.per_device)
        for d, n in w.device_inferences.items():
            per_device[d] = per_device.get(d, 0) + n
        has_lat = w.latency_p50_ms is not None
        return Evidence(
            devices=self.devices | frozenset(w.device_inferences),
            samples=self.samples + w.samples,
            inferences=self.inferences + w.inferences,
            errors=self.errors + w.errors,
            lat50_w=self.lat50_w + (w.latency_p50_ms or 0.0) * weight * has_lat,
            lat95_w=self.lat95_w + (w.latency_p95_ms or 0.0) * weight * has_lat,
            lat_w=self.lat_w + weight * has_lat,
            cpu_sum=self.cpu_sum + (w.cpu_mean or 0.0) * w.samples * (w.cpu_mean is not None),
            cpu_n=self.cpu_n + w.samples * (w.cpu_mean is not None),
            ram_sum=self.ram_sum + (w.ram_mean or 0.0) * w.samples * (w.ram_mean is not None),
            ram_n=self.ram_n + w.samples * (w.ram_mean is not None),
            ram_max=_max(self.ram_max, w.ram_max),
            temp_sum=self.temp_sum + (w.temp_mean_c or 0.0) * w.samples * (w.temp_mean_c is not None),
            temp_n=self.temp_n + w.samples * (w.temp_mean_c is not None),
            temp_max=_max(self.temp_max, w.temp_max_c),
            classes=classes,
            conf_sum=self.conf_sum + (w.mean_confidence or 0.0) * weight * (w.mean_confidence is not None),
            conf_w=self.conf_w + weight * (w.mean_confidence is not None),
            unknown_sum=self.unknown_sum + (w.unknown_rate or 0.0) * weight * (w.unknown_rate is not None),
            unknown_w=self.unknown_w + weight * (w.unknown_rate is not None),
            per_device=per_device,
        )

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.inferences if self.inferences else None

    @property
    def latency_p50(self) -> float | None:
        return self.lat50_w / self.lat_w if self.lat_w else None

    @property
    def latency_p95(self) -> float | None:
        return self.lat95_w / self.lat_w if self.lat_w else None

    @property
    def cpu(self) -> float | None:
        return self.cpu_sum / self.cpu_n if self.cpu_n else None

    @property
    def ram(self) -> float | None:
        return self.ram_sum / self.ram_n if self.ram_n else None

    @property
    def temp(self) -> float | None:
        return self.temp_sum / self.temp_n if self.temp_n else None

    @property
    def confidence(self) -> float | None:
        return self.conf_sum / self.conf_w if self.conf_w else None

    @property
    def unknown_rate(self) -> float | None:
        return self.unknown_sum / self.unknown_w if self.unknown_w else None


def _max(a: float | None, b: float | None) -> float | None:
    if b is None:
        return a
    return b if a is None else max(a, b)


@dataclass(frozen=True)
class Verdict:
    criterion: str
    result: str  # pass | fail | insufficient
    candidate: float | None = None
    baseline: float | None = None
    limit: float | None = None
    samples: Mapping[str, int] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class Decision:
    at: float
    deployment: str
    wave: int
    stage: str
    action: str  # open | advance | done | halt | hold | release | abort
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
    action: str  # hold | release | abort
    by: str  # "operator:<who>" or "cloud"
    why: str = ""


@dataclass(frozen=True)
class GateState:
    deployment: str  # model@version
    model_id: str
    version: str
    baseline_version: str | None
    stage: str  # shadow | waves | halted | aborted | done
    wave: int = 0
    opened_at: float = 0.0
    held_by: str | None = None
    admitted: Mapping[str, int] = field(default_factory=dict)  # device -> wave that admitted it
    ran: frozenset[str] = frozenset()  # activated or reported metrics on the candidate
    downloaded: frozenset[str] = frozenset()
    failed: frozenset[str] = frozenset()
    candidate: Evidence = Evidence()
    baseline: Evidence = Evidence()
    decisions: tuple[Decision, ...] = ()
    first_bad_at: float | None = None

    @property
    def active(self) -> bool:
        return self.stage in ("shadow", "waves")

    @property
    def rollback_set(self) -> frozenset[str]:
        """Devices to send back to the previous stable version (after a halt or an abort)."""
        return self.ran if self.stage in ("halted", "aborted") else frozenset()


def new_gate(
    deployment: str,
    model_id: str,
    version: str,
    baseline_version: str | None,
    settings: GateSettings,
    now: float,
) -> GateState:
    stage = "shadow" if settings.shadow and baseline_version else "waves"
    return GateState(deployment, model_id, version, baseline_version, stage, 0, now)


# -- criteria ---------------------------------------------------------------------------------------


def evaluate(state: GateState, lim: Limits) -> list[Verdict]:
    s = lim.site
    c, b = state.candidate, state.baseline
    n = {"devices": len(c.devices), "samples": c.samples, "inferences": c.inferences}
    enough = len(c.devices) >= s.min_devices and c.samples >= s.min_samples
    enough_inf = enough and c.inferences >= s.min_inferences
    base_n = {
        "baseline_devices": len(b.devices),
        "baseline_samples": b.samples,
        "baseline_inferences": b.inferences,
    }
    base_ok = len(b.devices) >= s.min_devices and b.samples >= s.min_samples
    out: list[Verdict] = []

    def check(
        name: str,
        value: float | None,
        limit: float | None,
        ok_data: bool,
        samples: Mapping[str, int],
        *,
        base: float | None = None,
        note: str = "",
    ) -> None:
        if limit is None:
            return
        if not ok_data or value is None:
            out.append(
                Verdict(name, "insufficient", value, base, limit, samples, note or "not enough data yet")
            )
            return
        out.append(Verdict(name, "fail" if value > limit else "pass", value, base, limit, samples, note))

    # absolute, from the manifest's health checks tightened by the site
    check("max_cpu_percent", c.cpu, lim.max_cpu_percent, enough, n)
    check("max_ram_percent", c.ram, lim.max_ram_percent, enough, n)
    check("max_latency_ms", c.latency_p95, lim.max_latency_ms, enough, n, note="p95")
    check("max_error_rate", c.error_rate, lim.max_error_rate, enough_inf, n)
    check("max_temperature_c", c.temp_max, lim.max_temperature_c, enough and c.temp_max is not None, n)

    # relative to the baseline
    both = {**n, **base_n}
    if b.samples == 0:
        out.append(
            Verdict(
                "baseline", "insufficient", note="no devices of these cohorts on the previous stable version"
            )
        )
    else:
        rel_ok = enough and base_ok
        ratio = c.latency_p50 / b.latency_p50 if c.latency_p50 is not None and b.latency_p50 else None
        check(
            "latency_ratio",
            ratio,
            s.latency_ratio_max,
            rel_ok,
            both,
            base=1.0,
            note="candidate p50 / baseline p50",
        )
        rise = c.error_rate - b.error_rate if c.error_rate is not None and b.error_rate is not None else None
        check(
            "error_rate_rise",
            rise,
            s.error_rate_rise_max,
            rel_ok and c.inferences >= s.min_inferences and b.inferences >= s.min_inferences,
            both,
            base=b.error_rate,
        )
        cpu_rise = c.cpu - b.cpu if c.cpu is not None and b.cpu is not None else None
        check("cpu_rise_percent", cpu_rise, s.cpu_rise_max_percent, rel_ok, both, base=b.cpu)
        t_rise = c.temp - b.temp if c.temp is not None and b.temp is not None else None
        if t_rise is not None:
            check("temperature_rise_c", t_rise, s.temperature_rise_max_c, rel_ok, both, base=b.temp)
        # behaviour: classes that matter in the baseline must not collapse
        b_total, c_total = sum(b.classes.values()), sum(c.classes.values())
        if b_total and c_total:
            for name, count in sorted(b.classes.items()):
                share = count / b_total
                if share < s.class_floor:
                    continue
                expected = share * c_total
                c_share = c.classes.get(name, 0) / c_total
                if expected < s.min_expected_class_count or not rel_ok:
                    out.append(
                        Verdict(
                            f"class:{name}",
                            "insufficient",
                            c_share,
                            share,
                            share * s.class_collapse_ratio,
                            {**both, "expected": int(expected)},
                        )
                    )
                else:
                    bad = c_share < share * s.class_collapse_ratio
                    out.append(
                        Verdict(
                            f"class:{name}",
                            "fail" if bad else "pass",
                            c_share,
                            share,
                            share * s.class_collapse_ratio,
                            {**both, "expected": int(expected)},
                            "share must not collapse",
                        )
                    )
        drop = b.confidence - c.confidence if b.confidence is not None and c.confidence is not None else None
        check("confidence_drop", drop, s.confidence_drop_max, rel_ok, both, base=b.confidence)
    check("unknown_rate", c.unknown_rate, s.unknown_rate_max, enough and c.unknown_rate is not None, n)

    # installation, per wave
    wave_devices = [d for d, w in state.admitted.items() if w == state.wave]
    failed = sum(1 for d in wave_devices if d in state.failed)
    if wave_devices:
        share = failed / len(wave_devices)
        ok = len(wave_devices) >= s.min_devices or failed >= s.min_devices
        out.append(
            Verdict(
                "install_failures",
                ("fail" if share > s.install_failure_max else "pass") if ok else "insufficient",
                share,
                None,
                s.install_failure_max,
                {"wave_devices": len(wave_devices), "failed": failed},
            )
        )
    return out


# -- the state machine ---------------------------------------------------------------------------------


def _log(state: GateState, d: Decision) -> GateState:
    return dataclasses.replace(state, decisions=(*state.decisions, d)[-MAX_DECISIONS:])


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
        candidate=Evidence(),
        baseline=Evidence(),
    )


def step(
    state: GateState,
    *,
    now: float,
    limits: Limits,
    eligible: Mapping[str, Mapping[str, str]],
    windows: Sequence[WindowStats] = (),
    events: Iterable[Event] = (),
    controls: Iterable[Control] = (),
) -> tuple[GateState, list[Decision]]:
    """Advance one gate. ``eligible``: the site's devices the cloud made eligible for this candidate."""
    s = limits.site
    out: list[Decision] = []

    def decide(
        st: GateState, action: str, reason: str, verdicts: Sequence[Verdict] = (), by: str = "gate"
    ) -> GateState:
        d = Decision(now, st.deployment, st.wave, st.stage, action, reason, tuple(verdicts), by)
        out.append(d)
        return _log(st, d)

    for c in controls:
        if c.action == "hold" and state.active:
            state = decide(dataclasses.replace(state, held_by=c.by), "hold", c.why or "held", by=c.by)
        elif c.action == "release":
            if state.stage == "halted":
                state = dataclasses.replace(state, stage="waves", held_by=None, failed=frozenset())
                state = _open_wave(state, state.wave, now, eligible, s)
                state = decide(state, "release", c.why or "released after a halt", by=c.by)
            elif state.held_by is not None:
                state = decide(
                    dataclasses.replace(state, held_by=None, opened_at=now),
                    "release",
                    c.why or "released",
                    by=c.by,
                )
        elif c.action == "abort" and state.stage not in ("aborted",):
            state = decide(dataclasses.replace(state, stage="aborted"), "abort", c.why or "aborted", by=c.by)

    # installation events
    ran, downloaded, failed = set(state.ran), set(state.downloaded), set(state.failed)
    for e in events:
        if e.version != state.version:
            continue
        if e.event in ("downloaded", "verified"):
            downloaded.add(e.device_id)
            failed.discard(e.device_id)
        elif e.event in ("activated", "healthy"):
            ran.add(e.device_id)
            failed.discard(e.device_id)
        elif e.event == "rolled_back" or (e.event == "failed" and e.device_id in downloaded):
            failed.add(e.device_id)
    # evidence: candidate windows (shadow ones in the shadow stage), baseline in the same slices
    shadow = state.stage == "shadow"
    cand = [
        w
        for w in windows
        if w.key.model_id == state.model_id
        and w.key.model_version == state.version
        and w.key.shadow == shadow
    ]
    slices = {(w.start, w.key.cohort) for w in cand}
    base = [
        w
        for w in windows
        if w.key.model_id == state.model_id
        and w.key.model_version == state.baseline_version
        and not w.key.shadow
        and (w.start, w.key.cohort) in slices
    ]
    ev_c, ev_b = state.candidate, state.baseline
    for w in cand:
        ev_c = ev_c.add(w)
        if not shadow:
            ran.update(w.device_inferences)
    for w in base:
        ev_b = ev_b.add(w)
    state = dataclasses.replace(
        state,
        ran=frozenset(ran),
        downloaded=frozenset(downloaded),
        failed=frozenset(failed),
        candidate=ev_c,
        baseline=ev_b,
    )

    if not state.active:
        return state, out
    if not state.admitted:
        state = _open_wave(state, 0, now, eligible, s)
        state = decide(state, "open", f"{state.stage} stage: {len(state.admitted)} device(s) admitted")

    verdicts = evaluate(state, limits)
    failing = [v for v in verdicts if v.result == "fail"]
    if failing:
        names = ", ".join(v.criterion for v in failing)
        state = dataclasses.replace(state, stage="halted", first_bad_at=state.first_bad_at or now)
        return decide(state, "halt", f"failed: {names}", verdicts), out

    if state.held_by is not None or now - state.opened_at < s.soak_s:
        return state, out
    wave_devices = [d for d, w in state.admitted.items() if w == state.wave]
    warm = sum(
        1 for d in wave_devices if state.candidate.per_device.get(d, 0) >= max(1, limits.warmup_inferences)
    )
    if warm < math.ceil(s.warmup_share * len(wave_devices)):
        return state, out
    if any(
        v.result == "insufficient"
        and v.criterion in ("max_cpu_percent", "max_ram_percent", "max_latency_ms", "max_error_rate")
        for v in verdicts
    ):
        return state, out
    if state.stage == "shadow":
        state = dataclasses.replace(state, stage="waves")
        state = _open_wave(state, 0, now, eligible, s)
        return decide(
            state, "advance", "shadow stage passed: wave 0 switches to the candidate", verdicts
        ), out
    if state.wave + 1 >= len(s.waves) or len(state.admitted) >= len(eligible):
        state = dataclasses.replace(state, stage="done")
        return decide(state, "done", "every wave passed", verdicts), out
    state = _open_wave(state, state.wave + 1, now, eligible, s)
    return decide(
        state,
        "advance",
        f"wave {state.wave - 1} passed; wave {state.wave} opens with {len(state.admitted)} device(s)",
        verdicts,
    ), out
