"""Every gate criterion, once: its name, what it compares, its margin's setting, its unit, its words
for people, how the dashboard draws it and its weight.

Everything else is derived from these rows: the names ``gates.dry_run`` accepts (the settings), the
gate charts of the dashboard (:mod:`gateway.http.dashboard.gate_panel`), the words of ``gate
status``, the dashboard and the audit log (:mod:`gateway.core.gates.words`), and the README's table
of criteria and the margins of ``config/gateway.toml`` (:mod:`gateway.core.gates.table_docs`;
``tests/core/gates/test_table.py`` fails when a row lacks a part or when either file differs from
what the rows give, and ``python -m tests.core.gates.test_table`` writes them). A new criterion is
one row, its setting's default (:class:`gateway.core.settings.GateSettings`) and its test.

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
from dataclasses import dataclass, field

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
class Drawing:
    """How the dashboard's gate charts draw a row: on the chart titled ``chart`` (one of
    :data:`CHARTS`), the candidate's and the baseline's lines of the window history's ``series``
    (a field of :class:`gateway.telemetry.history.Point`; named ``label`` after the version, thin
    when ``faint``), and the row's limit named ``limit``: a horizontal line for an absolute row, a
    dashed line that follows the baseline for a relative one."""

    chart: str
    series: str
    limit: str
    label: str = ""
    faint: bool = False


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
    weight: float = 1.0  # its share of the false-halt budget, against the other rows that apply
    stage: str = ""  # judged only in this stage ("shadow"); "": in every stage
    # what it compares, for the README's table and the config file's comment (required: no default)
    compares: str = field(kw_only=True)
    # its place on the dashboard's gate charts; None: shown in the gate's verdicts and timeline only
    draw: Drawing | None = field(kw_only=True)

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


# The dashboard's gate charts, in the order it shows them; the rows drawn on each say what it holds.
LATENCY_CHART, ERRORS_CHART, CPU_CHART, TEMPERATURE_CHART = (
    "Latency (p95, thin: p50)",
    "Error rate",
    "CPU",
    "Temperature",
)
CHARTS = (LATENCY_CHART, ERRORS_CHART, CPU_CHART, TEMPERATURE_CHART)

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
        compares="errors per inference, each device against its own past",
        draw=Drawing(ERRORS_CHART, "error_rate", "rise limit"),
    ),
    Criterion(
        "latency_ratio",
        Kind.RELATIVE,
        "latency",
        "latency_ratio_max",
        "latency",
        Unit.LOG_MS,
        time="add",
        compares="mean log latency",
        draw=Drawing(LATENCY_CHART, "latency_p50_ms", "p50 limit", " p50", faint=True),
    ),
    Criterion(
        "cpu_rise_percent",
        Kind.RELATIVE,
        "cpu",
        "cpu_rise_max_percent",
        "CPU",
        Unit.PERCENT,
        compares="CPU percent",
        draw=Drawing(CPU_CHART, "cpu_percent", "rise limit"),
    ),
    Criterion(
        "temperature_rise_c",
        Kind.RELATIVE,
        "temp",
        "temperature_rise_max_c",
        "temperature",
        Unit.CELSIUS,
        time="add",
        compares="temperature",
        draw=Drawing(TEMPERATURE_CHART, "temperature_c", "rise limit"),
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
        compares="mean confidence",
        draw=None,
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
        weight=WEIGHT_SUBTLE,
        compares="a class's detections against what the device showed before (classes with at least"
        " `gates.class_floor` of the baseline's)",
        draw=None,
    ),
)
ABSOLUTE = (
    Criterion(
        "max_cpu_percent",
        Kind.ABSOLUTE,
        "cpu",
        "limit:max_cpu_percent",
        "CPU",
        Unit.PERCENT,
        compares="CPU percent of the candidate's devices",
        draw=Drawing(CPU_CHART, "cpu_percent", "limit"),
    ),
    Criterion(
        "max_ram_percent",
        Kind.ABSOLUTE,
        "ram",
        "limit:max_ram_percent",
        "RAM",
        Unit.PERCENT,
        compares="RAM percent of the candidate's devices",
        draw=None,
    ),
    Criterion(
        "max_latency_ms",
        Kind.ABSOLUTE,
        "latency",
        "limit:max_latency_ms",
        "latency",
        Unit.LOG_MS,
        compares="latency of the candidate's devices",
        draw=Drawing(LATENCY_CHART, "latency_p95_ms", "p95 limit", " p95"),
    ),
    Criterion(
        "max_error_rate",
        Kind.ABSOLUTE,
        "errors",
        "limit:max_error_rate",
        "errors",
        Unit.RATE,
        compares="errors per inference of the candidate's devices",
        draw=Drawing(ERRORS_CHART, "error_rate", "limit"),
    ),
    Criterion(
        "max_temperature_c",
        Kind.ABSOLUTE,
        "temp",
        "limit:max_temperature_c",
        "temperature",
        Unit.CELSIUS,
        compares="temperature of the candidate's devices",
        draw=Drawing(TEMPERATURE_CHART, "temperature_c", "limit"),
    ),
    Criterion(
        "unknown_rate",
        Kind.ABSOLUTE,
        "unknown",
        "unknown_rate_max",
        "unknown detections",
        Unit.RATE,
        compares="unknown detections",
        draw=None,
    ),
    Criterion(
        "min_confidence",
        Kind.ABSOLUTE,
        "confidence",
        "limit:min_confidence",
        "confidence",
        Unit.SCORE,
        higher_is_worse=False,
        compares="mean confidence",
        draw=None,
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
        compares='the manifest\'s `expected_classes` (`["person"]`, or `{"person": 0.3}`), each at least'
        " `gates.class_collapse_ratio` of its expected share",
        draw=None,
    ),
    Criterion(
        "invalid_metrics",
        Kind.ABSOLUTE,
        "invalid",
        "invalid_rise_max",
        "metrics refused as invalid",
        Unit.RATE,
        compares="messages refused as invalid from devices on the candidate, above the baseline's share",
        draw=None,
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
        compares="devices that failed after downloading, or rolled back",
        draw=None,
    ),
    Criterion(
        "silence",
        Kind.SHARE,
        "",
        "silent_max",
        "devices gone silent",
        Unit.RATE,
        compares="runners not heard for `gates.silence_after_s` (metrics or an event)",
        draw=None,
    ),
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
        compares="the candidate's top-1 agreement with the active model on the same frames (shadow stage"
        " only)",
        draw=None,
    ),
    Criterion(
        "shadow_class_agreement",
        Kind.ABSOLUTE,
        "agree:",
        "shadow_agreement_class_min",
        "agreement on class",
        Unit.RATE,
        higher_is_worse=False,
        stage="shadow",
        compares="the same, on the frames whose active label was the class (classes with at least"
        " `gates.class_floor` of the baseline's)",
        draw=None,
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
        weight=0.0,
        compares="the drift watch's alert on an input feature of the gate's model ([Drift signals]"
        "(#drift-signals)): worse when raised since the gate opened; left out when the model reports"
        " no judged feature",
        draw=None,
    ),
)
CRITERIA: tuple[Criterion, ...] = (*RELATIVE, *ABSOLUTE, *SHARE, *SHADOW, *ALERT)
BY_NAME = {c.name: c for c in CRITERIA}


def family(criterion: str) -> Criterion | None:
    """The row of a verdict's criterion name (``class:person`` is the ``class`` row)."""
    return BY_NAME.get(criterion.split(":", 1)[0])
