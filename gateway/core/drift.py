"""Drift of a site's inputs: the devices' sketches merged per window, per site and per cohort, and
their distance to the manifest's reference profile and to the site's own past. Pure: values and
``now`` in, records and alerts out; the shell (:mod:`gateway.telemetry.drift`) feeds it and carries
the results to the outbox, status, Prometheus and the dashboard.

**The statistic** is the population stability index on ten bins cut at the baseline's deciles
(:mod:`gateway.core.drift_psi`, which says why PSI).

**The baseline.** *reference*: the manifest's ``drift_reference`` for the feature. *past*: the
site's own windows at the same time of day (a ``slot_s`` slot of a ``day_s`` day) over the last
``past_days`` days, so a night is compared with past nights. A window or a baseline with fewer than
``min_count`` values is not judged (``None``).

**The alert** (``alert_at``, ``alert_windows``): a feature alerts once its site-wide distance to
the past (and to the reference too, with ``alert_on_reference``) is at least ``alert_at`` in
``alert_windows`` judged windows in a row, and clears after as many below. Behaviour measured by
simulation (``tests/core/test_drift_alert.py``, seeds not used to pick the defaults): no alert in
a week of stable input with unlike devices, one very unlike camera in half the seeds, a day and
night swing and devices going quiet at random; and an alert within a stated time when a third of
the devices' input moves by one standard deviation at a random instant (the README has the figures).

Memory is bounded whatever the devices send: at most ``max_features`` (model, feature) pairs and
``max_cohorts`` cohorts are tracked, past them new ones are ignored and counted; the past is
kept for the site-wide windows only, one sketch of at most 48 buckets per slot and day.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from gateway.core.drift_psi import psi, quantile
from gateway.core.drift_settings import DriftSettings
from gateway.core.drift_sketch import DriftSketch, parse_sketch, valid_feature
from gateway.core.errors import FormatError
from gateway.core.gates.values import FeatureDrift, InputDrift
from gateway.core.manifest import valid_id

AGAINST = ("past", "reference")
SITE = "site"  # the scope of the site-wide windows; a cohort's scope is "<attribute>:<value>"

Key = tuple[str, str]
"""(model_id, feature)"""


@dataclass(frozen=True)
class DriftRecord:
    """One feature's window in one scope: what goes upstream as a ``drift`` record."""

    model_id: str
    feature: str
    scope: str
    start: float
    end: float
    count: int
    to_reference: float | None
    to_past: float | None
    alerting: bool
    quantiles: tuple[float, ...] = ()  # the window's p10, p50, p90 (bucket midpoints)

    def to_json(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "feature": self.feature,
            "scope": self.scope,
            "start": self.start,
            "end": self.end,
            "count": self.count,
            "psi_reference": self.to_reference,
            "psi_past": self.to_past,
            "alerting": self.alerting,
            "quantiles": list(self.quantiles),
        }


@dataclass(frozen=True)
class DriftAlert:
    """A feature's alert raised or cleared: an event upstream and on status."""

    model_id: str
    feature: str
    raised: bool
    at: float
    distance: float
    against: str  # "past" or "reference"

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "drift_alert" if self.raised else "drift_cleared",
            "model_id": self.model_id,
            "feature": self.feature,
            "at": self.at,
            "psi": self.distance,
            "against": self.against,
        }


@dataclass
class _Alarm:
    over: int = 0
    under: int = 0
    on: bool = False
    at: float = 0.0  # when it was last raised, at what distance and against what (for the gates)
    distance: float = 0.0
    against: str = "past"


@dataclass
class Closed:
    records: list[DriftRecord] = field(default_factory=list)
    alerts: list[DriftAlert] = field(default_factory=list)


class DriftTracker:
    """The open window's merged sketches, the site's past by time-of-day slot, the alarms."""

    def __init__(self, settings: DriftSettings) -> None:
        self.s = settings
        self.window_start: float | None = None
        self.open: dict[tuple[Key, str], DriftSketch] = {}
        self.ready: list[tuple[float, dict[tuple[Key, str], DriftSketch]]] = []
        self.past: dict[Key, dict[int, DriftSketch]] = {}  # slot number since the epoch -> sketch
        self.alarms: dict[Key, _Alarm] = {}
        self.keys: set[Key] = set()
        self.cohorts: set[str] = set()
        self.ignored = 0  # features or cohorts past the caps, counted
        self.latest: dict[Key, DriftRecord] = {}  # the last site-wide record per feature

    def add(self, model_id: str, cohort: str, drift: Mapping[str, DriftSketch], now: float) -> None:
        self._roll(now)
        if self.window_start is None:
            self.window_start = now - now % self.s.window_s
        if cohort and cohort not in self.cohorts and len(self.cohorts) < self.s.max_cohorts:
            self.cohorts.add(cohort)
        for feature, sketch in drift.items():
            key = (model_id, feature)
            if key not in self.keys:
                if len(self.keys) >= self.s.max_features:
                    self.ignored += 1
                    continue
                self.keys.add(key)
            scopes = [SITE] + ([cohort] if cohort in self.cohorts else [])
            for scope in scopes:
                mine = self.open.get((key, scope))
                if mine is None:
                    self.open[(key, scope)] = sketch.copy()
                else:
                    mine.merge(sketch)

    def _slot(self, t: float) -> int:
        return int(t // self.s.slot_s)

    def baseline(self, key: Key, start: float) -> DriftSketch | None:
        """The site's past at the same time of day as a window starting at ``start``."""
        slots = self.past.get(key, {})
        per_day = round(self.s.day_s / self.s.slot_s)
        here = self._slot(start)
        merged = DriftSketch()
        for d in range(1, self.s.past_days + 1):
            old = slots.get(here - d * per_day)
            if old is not None:
                merged.merge(old)
        return merged if merged.count >= self.s.min_count else None

    def due(self, now: float) -> bool:
        return self.window_start is not None and now >= self.window_start + self.s.window_s

    def _roll(self, now: float) -> None:
        """A window past its end is set aside for :meth:`close_due`, so a late sample never lands
        in it (at most 16 kept: the shell closes them every few seconds)."""
        if self.window_start is not None and self.due(now):
            self.ready.append((self.window_start, self.open))
            self.open, self.window_start = {}, None
            del self.ready[:-16]

    def close_due(self, now: float, references: Mapping[Key, DriftSketch]) -> Closed:
        """Close the windows past their end: their records and any alert changes."""
        self._roll(now)
        out = Closed()
        ready, self.ready = self.ready, []
        for start, opened in ready:
            end = start + self.s.window_s
            for (key, scope), sketch in sorted(opened.items()):
                rec = self._record(key, scope, sketch, start, end, references.get(key))
                if scope == SITE:
                    alert = self._judge(key, rec, end)
                    if alert is not None:
                        out.alerts.append(alert)
                    rec = DriftRecord(**{**rec.__dict__, "alerting": self.alarms[key].on})
                    self.latest[key] = rec
                    self._remember(key, start, sketch)
                out.records.append(rec)
        return out

    def _record(
        self, key: Key, scope: str, sketch: DriftSketch, start: float, end: float, ref: DriftSketch | None
    ) -> DriftRecord:
        judged = sketch.count >= self.s.min_count
        to_ref = psi(ref, sketch) if judged and ref is not None and ref.count >= self.s.min_count else None
        past = self.baseline(key, start) if judged and scope == SITE else None
        return DriftRecord(
            model_id=key[0],
            feature=key[1],
            scope=scope,
            start=start,
            end=end,
            count=sketch.count,
            to_reference=to_ref,
            to_past=psi(past, sketch) if past is not None else None,
            alerting=False,
            quantiles=tuple(q for q in (quantile(sketch, p) for p in (0.1, 0.5, 0.9)) if q is not None),
        )

    def _judge(self, key: Key, rec: DriftRecord, now: float) -> DriftAlert | None:
        alarm = self.alarms.setdefault(key, _Alarm())
        seen = [("past", rec.to_past)]
        if self.s.alert_on_reference:
            seen.append(("reference", rec.to_reference))
        judged = [(d, against) for against, d in seen if d is not None]
        if not judged:
            return None  # not judged: neither counts for nor against
        distance, against = max(judged)
        if distance >= self.s.alert_at:
            alarm.over, alarm.under = alarm.over + 1, 0
        else:
            alarm.over, alarm.under = 0, alarm.under + 1
        if not alarm.on and alarm.over >= self.s.alert_windows:
            alarm.on, alarm.at, alarm.distance, alarm.against = True, now, distance, against
            return DriftAlert(key[0], key[1], True, now, distance, against)
        if alarm.on and alarm.under >= self.s.alert_windows:
            alarm.on = False
            return DriftAlert(key[0], key[1], False, now, distance, against)
        return None

    def _remember(self, key: Key, start: float, sketch: DriftSketch) -> None:
        slots = self.past.setdefault(key, {})
        here = self._slot(start)
        mine = slots.get(here)
        if mine is None:
            slots[here] = sketch.copy()
        else:
            mine.merge(sketch)
        oldest = here - self.s.past_days * round(self.s.day_s / self.s.slot_s)
        for old in [s for s in slots if s < oldest]:
            del slots[old]

    def gate_view(self) -> InputDrift:
        """What the gates read (the ``input_drift`` row): each model's features judged in their
        latest site-wide window, with the distance the alert reads and the alert in force."""
        models: dict[str, list[FeatureDrift]] = {}
        for key, rec in sorted(self.latest.items()):
            seen = [("past", rec.to_past)] + (
                [("reference", rec.to_reference)] if self.s.alert_on_reference else []
            )
            judged = [(d, against) for against, d in seen if d is not None]
            alarm = self.alarms.get(key, _Alarm())
            if alarm.on and not judged:  # the window had too few values: the alert's own figures
                judged = [(alarm.distance, alarm.against)]
            if not judged:
                continue
            distance, against = max(judged)
            feature = FeatureDrift(key[1], distance, against, alarm.at if alarm.on else None)
            models.setdefault(key[0], []).append(feature)
        return InputDrift(self.s.alert_at, {m: tuple(fs) for m, fs in models.items()})

    def to_json(self) -> dict[str, Any]:
        """What a restart should not forget: the site's past and the alarms (``restore``)."""
        return {
            "version": 1,
            "past": [
                {
                    "model_id": m,
                    "feature": f,
                    "slots": {str(n): sk.to_json() for n, sk in sorted(slots.items())},
                }
                for (m, f), slots in sorted(self.past.items())
            ],
            "alarms": [
                {"model_id": m, "feature": f, **asdict(a)} for (m, f), a in sorted(self.alarms.items())
            ],
        }

    def restore(self, doc: Any) -> None:
        """Take back :meth:`to_json`'s document; :class:`FormatError` when it is not one (the
        shell then starts with no past). At most ``max_features`` features and ``past_days`` of
        slots are taken, whatever the file holds."""
        if not isinstance(doc, dict) or doc.get("version") != 1:
            raise FormatError("not a drift state document of version 1")
        keep = self.s.past_days * round(self.s.day_s / self.s.slot_s)
        past: dict[Key, dict[int, DriftSketch]] = {}
        alarms: dict[Key, _Alarm] = {}
        try:
            for item in doc["past"][: self.s.max_features]:
                key = _key(item)
                slots = {int(n): parse_sketch(sk, "drift state") for n, sk in item["slots"].items()}
                past[key] = {n: slots[n] for n in sorted(slots)[-keep:]}
            for item in doc["alarms"][: self.s.max_features]:
                counts = [item[k] for k in ("over", "under")]
                at, distance = item.get("at", 0.0), item.get("distance", 0.0)  # absent in older files
                against = item.get("against", "past")
                ok = all(isinstance(c, int) and c >= 0 for c in counts) and isinstance(item["on"], bool)
                if (
                    not ok
                    or not all(isinstance(x, (int, float)) for x in (at, distance))
                    or against not in AGAINST
                ):
                    raise FormatError("drift state: a bad alarm")
                alarms[_key(item)] = _Alarm(
                    counts[0], counts[1], item["on"], float(at), float(distance), against
                )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(f"drift state: wrong shape ({exc!r})") from None
        self.past, self.alarms = past, alarms
        self.keys = set(past) | set(alarms) | self.keys
        self.keys = set(sorted(self.keys)[: self.s.max_features])


def _key(item: Any) -> Key:
    m, f = item["model_id"], item["feature"]
    if not isinstance(m, str) or not (m == "-" or valid_id(m)) or not valid_feature(f):
        raise FormatError("drift state: a bad model or feature name")
    return (m, f)
