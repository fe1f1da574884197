"""A fast, seeded simulation of a site running a canary rollout through the real pure gate.

Devices report metrics every 20 s into the real :class:`~gateway.telemetry.aggregate.Aggregator`
(60 s windows); closed windows, install events and the eligible set go to
:func:`gateway.rollout.gates.step`. A device admitted to a wave installs the candidate on its next
poll (unless its download fails, in the network story), and goes back to the baseline version on
the window after a halt names it for rollback. Hours of site time run in milliseconds.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from gateway.manifest import HealthChecks
from gateway.rollout.gates import Event, GateState, Limits, new_gate, step
from gateway.settings import GateSettings
from gateway.telemetry.aggregate import Aggregator
from gateway.telemetry.schema import Sample

WINDOW_S = 60.0
REPORT_S = 20.0


@dataclass(frozen=True)
class Behaviour:
    """How a model version behaves on a device (means; noise is added per device and per report)."""

    latency_ms: float = 40.0
    cpu: float = 30.0
    ram: float = 40.0
    temp: float = 55.0
    error_rate: float = 0.005
    classes: tuple[tuple[str, float], ...] = (("person", 0.7), ("forklift", 0.29), ("spill", 0.01))
    confidence: float = 0.80
    unknown_rate: float = 0.02


BASELINE = Behaviour()
STORIES: dict[str, Behaviour] = {
    "cpu_spike": dataclasses.replace(BASELINE, cpu=60.0),
    "missing_class": dataclasses.replace(
        BASELINE,
        latency_ms=35.0,
        confidence=0.85,
        classes=(("person", 0.70), ("forklift", 0.30), ("spill", 0.0)),
    ),
    "runtime_errors": dataclasses.replace(BASELINE, error_rate=0.03),
    "network_timeouts": BASELINE,  # a good model on a bad link
    "good": BASELINE,
}


@dataclass
class Result:
    stage: str
    ever_ran_candidate: int
    first_wave_size: int
    windows_to_halt: int | None  # from the first window the candidate ran in, to the halt (inclusive)
    rolled_back: int
    admitted: int
    eligible: int
    max_admitted_in_one_step: int
    decisions: list[str] = field(default_factory=list)


def run(
    story: str,
    *,
    seed: int = 0,
    devices: int = 200,
    hours: float = 6.0,
    settings: GateSettings | None = None,
    download_failure: float = 0.0,
) -> Result:
    rng = random.Random(seed)
    site = settings or GateSettings(
        waves=(1.0, 5.0, 10.0, 25.0, 50.0, 100.0),
        min_devices_per_wave=2,
        soak_s=300.0,
        min_devices=2,
        min_samples=6,
    )
    if story == "network_timeouts":
        download_failure = download_failure or 0.6
    limits = Limits.of(HealthChecks(max_cpu_percent=90, max_error_rate=0.05, warmup_inferences=300), site)
    candidate = STORIES[story]
    ids = [f"dev-{i:03d}" for i in range(devices)]
    attrs = {d: {"hw": ("rev1", "rev2")[i % 2]} for i, d in enumerate(ids)}
    bias = {d: (rng.gauss(0, 3), rng.gauss(0, 4)) for d in ids}  # per-device latency and CPU offsets
    version = dict.fromkeys(ids, "1.0.0")
    downloaded: set[str] = set()
    state: GateState = new_gate("detector@2.0.0", "detector", "2.0.0", "1.0.0", site, 0.0)
    agg = Aggregator(WINDOW_S, "hw")
    ever_ran: set[str] = set()
    rolled_back: set[str] = set()
    first_wave = 0
    max_step = 0
    windows_to_halt: int | None = None
    first_candidate_window: int | None = None
    t = 0.0
    window_index = 0
    end = hours * 3600
    while t < end:
        events: list[Event] = []
        # devices act on the gate's state: admitted ones install; rollback set goes back
        for d in ids:
            if state.stage in ("halted", "aborted") and d in state.rollback_set and version[d] == "2.0.0":
                version[d] = "1.0.0"
                rolled_back.add(d)
                events.append(Event(d, "rolled_back", "2.0.0"))
            elif (
                (state.active or state.stage == "done")
                and d in state.admitted
                and version[d] == "1.0.0"
                and d not in rolled_back
            ):
                if d not in downloaded:
                    if rng.random() < download_failure:
                        events.append(Event(d, "failed", "2.0.0"))  # the download timed out; retry later
                        continue
                    downloaded.add(d)
                    events.append(Event(d, "downloaded", "2.0.0"))
                if state.stage in ("waves", "done"):
                    version[d] = "2.0.0"
                    ever_ran.add(d)
                    events.append(Event(d, "activated", "2.0.0"))
        # one window of reports
        for r in range(int(WINDOW_S / REPORT_S)):
            now = t + r * REPORT_S + 1
            for d in ids:
                b = candidate if version[d] == "2.0.0" else BASELINE
                agg.add(_sample(rng, d, version[d], b, bias[d], now), attrs[d])
                if state.stage == "shadow" and d in state.admitted:
                    agg.add(_sample(rng, d, "2.0.0", candidate, bias[d], now, shadow=True), attrs[d])
        t += WINDOW_S
        window_index += 1
        windows = agg.close_due(t)
        before = len(state.admitted)
        eligible = attrs
        state, decisions = step(
            state, now=t, limits=limits, eligible=eligible, windows=windows, events=events
        )
        max_step = max(max_step, len(state.admitted) - before)
        if not first_wave and state.admitted:
            first_wave = len(state.admitted)
        if first_candidate_window is None and any(w.key.model_version == "2.0.0" for w in windows):
            first_candidate_window = window_index
        for dec in decisions:
            if dec.action == "halt" and windows_to_halt is None and first_candidate_window is not None:
                windows_to_halt = window_index - first_candidate_window + 1
        if state.stage == "done" and all(v == "2.0.0" for v in version.values()):
            break
        if state.stage == "halted" and not any(v == "2.0.0" for v in version.values()) and t > 3600:
            break
    return Result(
        stage=state.stage,
        ever_ran_candidate=len(ever_ran),
        first_wave_size=first_wave,
        windows_to_halt=windows_to_halt,
        rolled_back=len(rolled_back),
        admitted=len(state.admitted),
        eligible=devices,
        max_admitted_in_one_step=max_step,
        decisions=[f"{d.action}: {d.reason}" for d in state.decisions],
    )


def _sample(
    rng: random.Random,
    d: str,
    version: str,
    b: Behaviour,
    bias: tuple[float, float],
    now: float,
    shadow: bool = False,
) -> Sample:
    n = max(1, int(rng.gauss(200, 20)))
    errors = _binomial(rng, n, b.error_rate)
    counts: dict[str, int] = {}
    left, rest = n, 1.0
    for name, share in b.classes:  # a multinomial draw as conditional binomials
        k = _binomial(rng, left, min(1.0, share / rest)) if rest > 0 else 0
        counts[name] = k
        left -= k
        rest -= share
    return Sample(
        device_id=d,
        received_at=now,
        model_id="detector",
        model_version=version,
        inferences=n,
        errors=errors,
        latency_ms=max(1.0, rng.gauss(b.latency_ms + bias[0], 3)),
        cpu_percent=min(100.0, max(0.0, rng.gauss(b.cpu + bias[1], 3))),
        ram_percent=min(100.0, max(0.0, rng.gauss(b.ram, 2))),
        temperature_c=rng.gauss(b.temp, 1.5),
        class_counts=counts,
        mean_confidence=min(1.0, max(0.0, rng.gauss(b.confidence, 0.02))),
        unknown_rate=min(1.0, max(0.0, rng.gauss(b.unknown_rate, 0.005))),
        shadow=shadow,
    )


def _binomial(rng: random.Random, n: int, p: float) -> int:
    if p <= 0:
        return 0
    if n * p > 30:  # normal approximation, fast and close enough for counts this large
        return max(0, min(n, round(rng.gauss(n * p, (n * p * (1 - p)) ** 0.5))))
    return sum(1 for _ in range(n) if rng.random() < p)
