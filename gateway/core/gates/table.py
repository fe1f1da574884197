"""Every gate criterion, once: its name, what it compares, its margin's setting, its unit and its words.

The settings' docs, the dashboard's figures, ``gate status`` and the README's table are derived from
these rows (``tests/core/gates/test_table.py`` fails when a row lacks any of them, or when the README
or the config file does not name a row's setting). A new criterion is one row, its setting's default
and its test.

Kinds:

* ``relative``: each device on the candidate against its own level on the baseline, with what
  changed for everyone taken out by the devices still on the baseline over the same windows
  (:mod:`gateway.core.gates.paired`); the margin is how much worse the candidate may be;
* ``absolute``: the candidate's devices against a limit (the manifest's health checks, tightened by
  the site); needs no baseline;
* ``share``: a share of the candidate's devices (install failures, silence) against a limit;
* ``alert``: the drift watch's alert on an input feature of the gate's model
  (:mod:`gateway.core.drift`), raised since the gate opened. Not a statistical test at a stated
  rate: its weight is 0, it takes no share of the false-halt budget and the stated rate does not
  cover it, which is why ``gates.dry_run`` names it by default.

Rows with a ``stage`` are judged only in that stage: ``shadow_agreement`` and
``shadow_class_agreement`` (the candidate's top-1 agreement with the active model on the same frames,
overall and per class, :mod:`gateway.core.gates.shadow`) in the shadow stage. They count in the
false-halt budget over the whole rollout of a gate that has a shadow stage.

Forms of comparison: ``diff`` (the candidate's value minus what the device would have shown on the
baseline), ``ratio`` (observed over expected, for a class's detections). Time effects: ``mult`` (a
night that doubles traffic doubles errors on every device) or ``add`` (log latency, temperature,
confidence).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from gateway.core.gates.values import GateLimits


class Kind(enum.StrEnum):
    RELATIVE = "relative"
    ABSOLUTE = "absolute"
    SHARE = "share"
    ALERT = "alert"


class Unit(enum.StrEnum):
    RATE = "rate"  # a fraction, shown in percent; a difference of two in points
    PERCENT = "percent"  # already in percent (CPU, RAM); a difference in points
    LOG_MS = "log_ms"  # mean log latency: shown in ms, a difference as a ratio (x)
    CELSIUS = "celsius"
    SCORE = "score"  # confidence, 0 to 1
    RATIO = "ratio"  # observed over expected


@dataclass(frozen=True)
class Criterion:
    name: str
    kind: Kind
    metric: str  # gateway.core.gates.levels.observe's name ("class:" rows: one per class)
    setting: str  # the GateSettings field of its margin or limit ("manifest:..." when the manifest's)
    words: str  # for people: "errors", "CPU", ...
    unit: Unit
    higher_is_worse: bool = True
    form: str = "diff"  # diff or ratio
    time: str = "mult"  # mult or add
    figure: str = "line"  # how the dashboard draws the evidence: line (estimate and bound) or bar
    weight: float = 1.0  # its share of the false-halt budget, against the other rows that apply
    stage: str = ""  # judged only in this stage ("shadow"); "": in every stage

    def margin(self, limits: GateLimits) -> float | None:
        """The margin on the comparison's own scale (None: not judged at this site)."""
        s = limits.site
        raw: float | None
        if self.setting.startswith("limit:"):
            raw = getattr(limits, self.setting[6:])
        else:
            raw = getattr(s, self.setting)
        if raw is None or (self.setting.startswith("limit:") and raw <= 0 and self.unit != Unit.SCORE):
            return None
        if self.unit == Unit.LOG_MS:
            return math.log(raw) if raw > 0 else None
        if self.name == "confidence_drop":
            return -raw
        return float(raw)

    def tau(self, margin: float) -> float:
        """The mixing scale of the test: the size of effect it is tuned to find (near the margin)."""
        if self.stage == "shadow":  # agreement near 1: the effect is a share of the disagreement room
            return max(1.0 - margin, 0.01)
        if self.form == "ratio":  # observed over expected: the effect is the distance from 1
            return max(1.0 - margin, 0.05)
        if self.kind == Kind.RELATIVE:
            return max(abs(margin), 1e-6)
        return max(abs(margin) * 0.25, 1e-6)


# The false-halt budget is split over the rows that apply in proportion to their weights (Bonferroni
# with unequal shares: any split keeps the total). A test's time to find an effect grows with
# log(1 / its share) over the effect's size squared, so the rows whose regressions are small next to
# their noise (errors: bursty counts; a rare class) get the larger shares, and rows whose failures
# are gross (a CPU limit, latency x2, silence) lose little time on a smaller one.
WEIGHT_SUBTLE = 3.0

RELATIVE = (
    Criterion(
        "error_rate_rise",
        Kind.RELATIVE,
        "errors",
        "error_rate_rise_max",
        "errors",
        Unit.RATE,
        weight=WEIGHT_SUBTLE,
    ),
    Criterion(
        "latency_ratio", Kind.RELATIVE, "latency", "latency_ratio_max", "latency", Unit.LOG_MS, time="add"
    ),
    Criterion("cpu_rise_percent", Kind.RELATIVE, "cpu", "cpu_rise_max_percent", "CPU", Unit.PERCENT),
    Criterion(
        "temperature_rise_c",
        Kind.RELATIVE,
        "temp",
        "temperature_rise_max_c",
        "temperature",
        Unit.CELSIUS,
        time="add",
    ),
    Criterion(
        "confidence_drop",
        Kind.RELATIVE,
        "confidence",
        "confidence_drop_max",
        "confidence",
        Unit.SCORE,
        higher_is_worse=False,
        time="add",
    ),
    Criterion(
        "class",
        Kind.RELATIVE,
        "class:",
        "class_collapse_ratio",
        "detections of a class",
        Unit.RATIO,
        higher_is_worse=False,
        form="ratio",
        figure="bar",
        weight=WEIGHT_SUBTLE,
    ),
)
ABSOLUTE = (
    Criterion("max_cpu_percent", Kind.ABSOLUTE, "cpu", "limit:max_cpu_percent", "CPU", Unit.PERCENT),
    Criterion("max_ram_percent", Kind.ABSOLUTE, "ram", "limit:max_ram_percent", "RAM", Unit.PERCENT),
    Criterion("max_latency_ms", Kind.ABSOLUTE, "latency", "limit:max_latency_ms", "latency", Unit.LOG_MS),
    Criterion("max_error_rate", Kind.ABSOLUTE, "errors", "limit:max_error_rate", "errors", Unit.RATE),
    Criterion(
        "max_temperature_c", Kind.ABSOLUTE, "temp", "limit:max_temperature_c", "temperature", Unit.CELSIUS
    ),
    Criterion("unknown_rate", Kind.ABSOLUTE, "unknown", "unknown_rate_max", "unknown detections", Unit.RATE),
    Criterion(
        "min_confidence",
        Kind.ABSOLUTE,
        "confidence",
        "limit:min_confidence",
        "confidence",
        Unit.SCORE,
        higher_is_worse=False,
    ),
    Criterion(
        "expected_class",
        Kind.ABSOLUTE,
        "class:",
        "class_collapse_ratio",
        "detections the manifest expects",
        Unit.RATIO,
        higher_is_worse=False,
        form="ratio",
        figure="bar",
    ),
    Criterion(
        "invalid_metrics",
        Kind.ABSOLUTE,
        "invalid",
        "invalid_rise_max",
        "metrics refused as invalid",
        Unit.RATE,
    ),
)
SHARE = (
    Criterion(
        "install_failures",
        Kind.SHARE,
        "",
        "install_failure_max",
        "installs that failed",
        Unit.RATE,
        figure="bar",
    ),
    Criterion("silence", Kind.SHARE, "", "silent_max", "devices gone silent", Unit.RATE, figure="bar"),
)
SHADOW = (
    Criterion(
        "shadow_agreement",
        Kind.ABSOLUTE,
        "agreement",
        "shadow_agreement_min",
        "agreement",
        Unit.RATE,
        higher_is_worse=False,
        stage="shadow",
    ),
    Criterion(
        "shadow_class_agreement",
        Kind.ABSOLUTE,
        "agree:",
        "shadow_agreement_class_min",
        "agreement on class",
        Unit.RATE,
        higher_is_worse=False,
        figure="bar",
        stage="shadow",
    ),
)
# weight 0: an alert past drift.alert_at for drift.alert_windows windows is a rule of thumb on the
# size of a change, not a test with a known rate under "no change"; giving it a share of the
# false-halt budget would take evidence from the rows that have one and still not bound its own rate
ALERT = (
    Criterion(
        "input_drift",
        Kind.ALERT,
        "drift:",
        "limit:drift_alert_at",
        "input drift",
        Unit.SCORE,
        figure="bar",
        weight=0.0,
    ),
)
CRITERIA: tuple[Criterion, ...] = (*RELATIVE, *ABSOLUTE, *SHARE, *SHADOW, *ALERT)
BY_NAME = {c.name: c for c in CRITERIA}


def family(criterion: str) -> Criterion | None:
    """The row of a verdict's criterion name (``class:person`` is the ``class`` row)."""
    return BY_NAME.get(criterion.split(":", 1)[0])
