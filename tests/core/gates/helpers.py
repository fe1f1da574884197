"""A site of unlike devices for the gate tests, window by window.

Each device has its own traits (traffic spread about 4x, an error rate drawn from a wide
distribution, its own latency, CPU, temperature, confidence and class mix); one may be a bad camera
with 8x the site's errors. Every report goes through the real :class:`~gateway.core.aggregate.Aggregator`,
so a window's pooled figures and its ``device_windows`` always agree, as they do at a real site.
A swing moves every device at once (night and day: traffic, errors, latency, temperature).

A test builds history on the baseline (:meth:`Fleet.history`: the levels a real site has before a
candidate lands, through the real :func:`gateway.core.gates.levels.update`), opens a gate with it,
then feeds :meth:`Fleet.window` to :func:`gateway.core.gates.step` with the gate's devices on the
candidate (:func:`drive`).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from gateway.core.aggregate import Aggregator
from gateway.core.gates import (
    Action,
    Decision,
    Event,
    GateLimits,
    GateState,
    Stage,
    Verdict,
    levels,
    open_gate,
    step,
)
from gateway.core.metrics import Sample
from gateway.core.settings import GateSettings
from gateway.core.window import WindowStats
from tests.rollout.sim import binomial

MODEL = "detector"
BASELINE, CANDIDATE = "1.0.0", "2.0.0"
WINDOW_S = 60.0
REPORTS = 3  # reports per device per window
CLASSES = (("person", 0.70), ("forklift", 0.29), ("spill", 0.01))


@dataclass(frozen=True)
class Traits:
    """How one device behaves on one version (means; each report adds its own noise)."""

    traffic: float = 1.0  # inferences per report, in hundreds
    error_rate: float = 0.005
    latency_ms: float = 40.0
    cpu: float = 30.0
    ram: float = 40.0
    temp: float | None = 50.0  # None: no sensor
    confidence: float = 0.80
    unknown: float = 0.02
    classes: tuple[tuple[str, float], ...] = CLASSES
    invalid: float = 0.0  # the share of its reports refused as invalid (an agent's own counting)


Change = Callable[[Traits], Traits]  # what a candidate does to a device's traits


def same(t: Traits) -> Traits:
    return t


def unlike_devices(n: int, seed: int, *, bad_camera: bool = False) -> dict[str, Traits]:
    """``n`` devices that differ far more than noise; with ``bad_camera`` the first has 8x the
    site's error rate."""
    rng = random.Random(seed)
    out: dict[str, Traits] = {}
    for i in range(n):
        person = rng.uniform(0.6, 0.8)
        spill = rng.uniform(0.008, 0.02)
        out[f"d{i:02d}"] = Traits(
            traffic=rng.uniform(0.5, 2.0),
            error_rate=min(0.2, 0.005 * math.exp(rng.gauss(0.0, 0.7))),
            latency_ms=rng.uniform(25.0, 60.0),
            cpu=rng.uniform(20.0, 45.0),
            ram=rng.uniform(30.0, 50.0),
            temp=rng.uniform(42.0, 58.0),
            confidence=rng.uniform(0.72, 0.88),
            unknown=rng.uniform(0.01, 0.04),
            classes=(("person", person), ("forklift", 1.0 - person - spill), ("spill", spill)),
        )
    if bad_camera and out:
        first = next(iter(out))
        site_rate = sum(t.error_rate for t in out.values()) / n
        out[first] = dataclasses.replace(out[first], error_rate=min(0.2, 8 * site_rate))
    return out


def sample(
    rng: random.Random,
    device: str,
    version: str,
    t: Traits,
    at: float,
    *,
    swing: float = 1.0,
    shadow: bool = False,
) -> Sample:
    """One metrics report as a device sends it (``swing``: what moves every device at once)."""
    n = max(1, round(rng.gauss(100 * t.traffic * swing, 10 * t.traffic)))
    counts: dict[str, int] = {}
    left, rest = n, 1.0
    for name, share in t.classes:  # a multinomial as conditional binomials
        k = binomial(rng, left, min(1.0, share / rest)) if rest > 0 else 0
        counts[name] = k
        left -= k
        rest -= share
    return Sample(
        device_id=device,
        received_at=at,
        model_id=MODEL,
        model_version=version,
        inferences=n,
        errors=binomial(rng, n, min(1.0, t.error_rate * swing)),
        latency_ms=max(1.0, rng.gauss(t.latency_ms * swing, 2.0)),
        cpu_percent=min(100.0, max(0.0, rng.gauss(t.cpu, 2.0))),
        ram_percent=min(100.0, max(0.0, rng.gauss(t.ram, 1.0))),
        temperature_c=None if t.temp is None else rng.gauss(t.temp + 4 * (swing - 1), 0.5),
        class_counts=counts,
        mean_confidence=min(1.0, max(0.0, rng.gauss(t.confidence, 0.01))),
        unknown_rate=min(1.0, max(0.0, rng.gauss(t.unknown, 0.003))),
        shadow=shadow,
    )


class Fleet:
    """The site's devices, reporting each window on the version each one runs."""

    def __init__(self, traits: Mapping[str, Traits], seed: int, *, swing_period_s: float = 0.0) -> None:
        self.traits = dict(traits)
        self.rng = random.Random(seed * 7919 + 1)
        self.swing_period_s = swing_period_s

    @property
    def eligible(self) -> dict[str, dict[str, str]]:
        return {d: {"hw": "rev1"} for d in self.traits}

    def swing(self, at: float) -> float:
        """Night and day, for every device at once (1.0 without a swing)."""
        if self.swing_period_s <= 0:
            return 1.0
        return 1.0 + 0.4 * math.sin(2 * math.pi * at / self.swing_period_s)

    def window(
        self,
        start: float,
        on_candidate: Iterable[str] = (),
        change: Change = same,
        *,
        shadow: Iterable[str] = (),
        silent: Iterable[str] = (),
    ) -> list[WindowStats]:
        """One window of every device's reports: those ``on_candidate`` with the candidate's
        ``change``, those in ``shadow`` on the baseline with the candidate beside it, the
        ``silent`` ones not at all."""
        agg = Aggregator(WINDOW_S, "hw")
        cand, shad, quiet = set(on_candidate), set(shadow), set(silent)
        for k in range(REPORTS):
            at = start + 1 + k * WINDOW_S / REPORTS
            s = self.swing(at)
            for dev, t in self.traits.items():
                if dev in quiet:
                    continue
                version = CANDIDATE if dev in cand else BASELINE
                traits = change(t) if dev in cand else t
                if self.rng.random() < traits.invalid:
                    agg.add_invalid(dev, MODEL, version, {"hw": "rev1"}, at)
                else:
                    agg.add(sample(self.rng, dev, version, traits, at, swing=s), {"hw": "rev1"})
                if dev in shad:
                    agg.add(
                        sample(self.rng, dev, CANDIDATE, change(t), at, swing=s, shadow=True), {"hw": "rev1"}
                    )
        return agg.close_due(start + WINDOW_S)

    def history(self, windows: int, settings: GateSettings, *, end: float = 0.0) -> levels.Levels:
        """The devices' own levels on the baseline after ``windows`` windows ending at ``end``
        (the real level update, as the site keeps them)."""
        key = f"{MODEL}@{BASELINE}"
        got: Mapping[str, levels.Levels] = {}
        for k in range(windows):
            start = end - (windows - k) * WINDOW_S
            got = levels.update(
                got,
                self.window(start),
                versions=frozenset({key}),
                half_life_s=settings.reference_half_life_s,
            )
        return got.get(key, {})


def opened(
    fleet: Fleet,
    settings: GateSettings,
    *,
    history: int = 30,
    now: float = 0.0,
    baseline: str | None = BASELINE,
) -> GateState:
    """A gate opened at ``now`` on a site whose devices ran the baseline for ``history`` windows
    (a model's first version, ``baseline=None``, has no history to compare with)."""
    reference = fleet.history(history, settings, end=now) if baseline else None
    state, decisions = open_gate(
        f"{MODEL}@{CANDIDATE}",
        MODEL,
        CANDIDATE,
        baseline,
        sha256="ab" * 32,
        settings=settings,
        now=now,
        eligible=fleet.eligible,
        reference=reference,
    )
    assert [d.action for d in decisions] == [Action.OPEN], decisions
    return state


def drive(
    state: GateState,
    fleet: Fleet,
    limits: GateLimits,
    change: Change,
    *,
    windows: int,
    start: float = 0.0,
    until: Callable[[GateState], bool] | None = None,
) -> tuple[GateState, list[Decision]]:
    """Step the gate window by window, the devices it admitted on the candidate (``change``), until
    ``until`` holds or ``windows`` have passed; every decision made on the way."""
    made: list[Decision] = []
    for k in range(windows):
        t = start + k * WINDOW_S
        on = [d for d in state.admitted if state.active]
        events: list[Event] = []
        if state.stage == Stage.SHADOW:  # the wave's devices run both, the baseline still active
            ws = fleet.window(t, (), change, shadow=on)
        else:
            ws = fleet.window(t, on, change)
            # a device installs the candidate when it is admitted, and says so
            new = [d for d in on if d not in state.ran and d not in state.downloaded]
            events = [Event(d, e, CANDIDATE) for d in new for e in ("downloaded", "activated")]
        state, decisions = step(
            state, now=t + WINDOW_S, limits=limits, eligible=fleet.eligible, windows=ws, events=events
        )
        made += decisions
        if until is not None and until(state):
            break
    return state, made


def verdict(decision: Decision, criterion: str) -> Verdict:
    """The decision's verdict on ``criterion`` (an error naming what it had, when it has none)."""
    found = [v for v in decision.verdicts if v.criterion == criterion]
    assert found, f"no verdict on {criterion}: {[v.criterion for v in decision.verdicts]}"
    return found[0]
