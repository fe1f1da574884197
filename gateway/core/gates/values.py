"""The gates' values: stages, actions, limits, verdicts, decisions, inputs and one gate's state."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.figures import Figures
from gateway.core.gates.sequential import Answer
from gateway.core.gates.stream import Stream
from gateway.core.manifest import HealthChecks
from gateway.core.settings import GateSettings

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
    WAIT_REFERENCE = "wait_for_reference"  # a new gate waits for its devices' levels on the baseline


CONTROLS = (Action.HOLD, Action.RELEASE, Action.ABORT, Action.APPROVE)


Result = Answer  # a criterion's answer: worse, no worse (than its margin) or undecided


@dataclass(frozen=True)
class FeatureDrift:
    """One input feature of a model as the drift watch judges it now (:mod:`gateway.core.drift`)."""

    feature: str
    psi: float  # the distance of its latest judged site-wide window (the larger one the alert reads)
    against: str  # "past" (the site's own past) or "reference" (the manifest's profile)
    raised_at: float | None = None  # its alert in force since then (None: no alert in force)


@dataclass(frozen=True)
class InputDrift:
    """What the drift watch says to the gates: its alert threshold and each model's judged features."""

    alert_at: float
    models: Mapping[str, tuple[FeatureDrift, ...]] = field(default_factory=dict)


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
    # the drift watch's alert threshold and the gate's model's judged input features (None: no drift
    # watch, as in ``gate replay``; the input_drift row is then left out)
    drift_alert_at: float | None = None
    drift: tuple[FeatureDrift, ...] = ()

    def with_drift(self, drift: InputDrift | None, model_id: str) -> GateLimits:
        if drift is None:
            return self
        return dataclasses.replace(self, drift_alert_at=drift.alert_at, drift=drift.models.get(model_id, ()))

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
    result: Result
    candidate: float | None = None
    baseline: float | None = None
    limit: float | None = None
    samples: Mapping[str, int] = field(default_factory=dict)
    note: str = ""
    dry_run: bool = False  # named in gates.dry_run: recorded, never halting
    # the evidence: the confidence sequence around the estimate at the criterion's share of the
    # stated rate, and the e-value that it is worse than its margin (a product across independent
    # sites is an e-value too)
    lower: float | None = None
    upper: float | None = None
    e_value: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "result", Result(self.result))  # also when read back from a file


@dataclass(frozen=True)
class Decision:
    at: float
    deployment: str
    wave: int
    stage: Stage
    action: Action
    reason: str
    verdicts: tuple[Verdict, ...] = ()
    by: str = "gate"

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage", Stage(self.stage))  # also when read back from a file
        object.__setattr__(self, "action", Action(self.action))

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "verdicts": [dataclasses.asdict(v) for v in self.verdicts]}


@dataclass(frozen=True)
class Event:
    device_id: str
    event: str  # downloaded, verified, activated, healthy, rolled_back, failed
    version: str | None


@dataclass(frozen=True)
class Control:
    action: str  # an Action of CONTROLS; anything else is refused (control_refusal says why)
    by: str  # "operator:<who>" or "cloud"
    why: str = ""


@dataclass(frozen=True)
class GateState:
    deployment: str  # model@version
    model_id: str
    version: str
    baseline_version: str | None
    stage: Stage
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
    # each device's own level on the baseline when the gate opened (gateway.core.gates.levels), the
    # classes judged, and the evidence of every criterion over the rollout (gateway.core.gates.paired)
    reference: Mapping[str, Mapping[str, tuple[float, ...]]] = field(default_factory=dict)
    classes: tuple[str, ...] = ()
    streams: Mapping[str, Stream] = field(default_factory=dict)
    # the shadow stage's confusion pairs ("active->candidate" -> frames; gateway.core.gates.shadow)
    confusion: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stage", Stage(self.stage))  # also when read back from a file

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
