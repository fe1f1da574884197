"""Every criterion of a gate, judged on the evidence of the current wave (pure)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from gateway.core.figures import Figures
from gateway.core.gates.values import (
    GateLimits,
    GateState,
    Result,
    Verdict,
)
from gateway.core.settings import GateSettings


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


ABSOLUTE = ("max_cpu_percent", "max_ram_percent", "max_latency_ms", "max_error_rate")
