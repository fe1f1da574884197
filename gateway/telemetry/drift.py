"""Drift signals in and out: the thin shell around :class:`gateway.core.drift.DriftTracker`.

The ingest hands it each valid sample's ``drift`` sketches with the device's cohort; every few
seconds the site loop's round closes the windows past their end. Each closed window becomes one
``drift`` outbox record per feature and scope (the site, each cohort), and an alert raised or
cleared one ``drift_alert`` record (the uplink carries both like any other kind). The latest
distances, the alerts in force and a short history per feature are kept in memory for status,
Prometheus and the dashboard's chart.

The site's past and the alarms are kept in ``<data>/drift-state.json`` (written whole, atomically,
in a worker thread after each window; read back before the first window closes after a start), so
a restart does not blind the comparison with the past for a day nor raise an alert twice. A
damaged file is moved aside and the gateway starts with no past (alerts against the past resume
once a day of windows is in), saying so on ``/status`` under ``recovered``.

The reference profiles are the ``drift_reference`` of the manifests in the held index, read when a
window closes (when several of a model's manifests carry one, the one listed last); a manifest
whose profile does not parse keeps its deployment and loses only its profile, with a log line. What the distance means
and when it alerts is :mod:`gateway.core.drift`'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from gateway.core.drift import SITE, DriftAlert, DriftRecord, DriftTracker, Key
from gateway.core.drift_settings import DriftSettings
from gateway.core.drift_sketch import DriftSketch, parse_drift
from gateway.core.errors import DamagedStateError, FormatError
from gateway.core.manifest import Deployment
from gateway.core.metrics import Sample
from gateway.core.settings import Settings
from gateway.runtime import atomic
from gateway.runtime.stats import Stats
from gateway.uplink.outbox import Outbox

log = logging.getLogger(__name__)

REFERENCE_FIELD = "drift_reference"
STATE_FILE = "drift-state.json"
HISTORY_WINDOWS = 144  # per feature, for the dashboard's chart (a day of 10-minute windows)
MAX_ALERTS_KEPT = 50


def references_of(deployments: Iterable[Deployment]) -> dict[Key, DriftSketch]:
    """Each (model, feature)'s reference: of the model's manifests that carry one, the last listed."""
    out: dict[Key, DriftSketch] = {}
    for d in deployments:
        raw = d.raw.get(REFERENCE_FIELD)
        if raw is None:
            continue
        try:
            profile = parse_drift(raw, f"{d.key}: {REFERENCE_FIELD}", max_features=64)
        except FormatError as exc:
            log.warning("ignored a reference profile: %s", exc)
            continue
        for feature, sketch in profile.items():
            out[(d.model_id, feature)] = sketch
    return out


class Held(Protocol):
    """The held index, as far as drift reads it (its manifests' reference profiles)."""

    @property
    def deployments(self) -> Sequence[Deployment]: ...


class DriftWatch:
    def __init__(
        self,
        settings: DriftSettings,
        *,
        site: str,
        cohort_attribute: str,
        outbox: Outbox,
        stats: Stats,
        deployments: Callable[[], Iterable[Deployment]],
        state: Path | None = None,
    ) -> None:
        self.settings = settings
        self.site = site
        self.cohort_attribute = cohort_attribute
        self.outbox = outbox
        self.stats = stats
        self.deployments = deployments
        self.tracker = DriftTracker(settings)
        self.history: dict[Key, deque[DriftRecord]] = {}
        self.alerts: deque[DriftAlert] = deque(maxlen=MAX_ALERTS_KEPT)
        self.state = state
        self.loaded = state is None
        self.recovered: list[dict[str, Any]] = []  # a damaged state file found at load (for /status)

    @classmethod
    def of(
        cls, settings: Settings, outbox: Outbox, stats: Stats, *, held: Callable[[], Held | None]
    ) -> DriftWatch:
        def deployments() -> Sequence[Deployment]:
            index = held()
            return index.deployments if index is not None else ()

        return cls(
            settings.drift,
            site=settings.site,
            cohort_attribute=settings.telemetry.cohort_attribute,
            outbox=outbox,
            stats=stats,
            deployments=deployments,
            state=settings.data_path / STATE_FILE,
        )

    def take(self, sample: Sample, attrs: Mapping[str, str], now: float) -> None:
        if not self.settings.enabled or not sample.drift:
            return
        cohort = attrs.get(self.cohort_attribute, "")
        scope = f"{self.cohort_attribute}:{cohort}" if cohort else ""
        before = self.tracker.ignored
        self.tracker.add(sample.model_id or "-", scope, sample.drift, now)
        if self.tracker.ignored > before:
            self.stats.inc("drift.ignored_features", self.tracker.ignored - before)

    async def close_due(self, now: float) -> None:
        """Close the windows past their end: their records and alerts into the outbox, committed
        together (one group commit, not one per record)."""
        if not (self.tracker.due(now) or self.tracker.ready):
            return
        if not self.loaded:
            await asyncio.to_thread(self._load)
        closed = self.tracker.close_due(now, references_of(self.deployments()))
        pending = []
        for rec in closed.records:
            pending.append(self.outbox.append_nowait("drift", {"site": self.site, **rec.to_json()}, now))
            if rec.scope == SITE:
                key = (rec.model_id, rec.feature)
                self.history.setdefault(key, deque(maxlen=HISTORY_WINDOWS)).append(rec)
        for alert in closed.alerts:
            self.alerts.append(alert)
            pending.append(
                self.outbox.append_nowait("drift_alert", {"site": self.site, **alert.to_json()}, now)
            )
            word = "raised" if alert.raised else "cleared"
            log.warning(
                "drift alert %s: %s %s, PSI %.3f against the %s",
                word,
                alert.model_id,
                alert.feature,
                alert.distance,
                alert.against,
            )
        await asyncio.gather(*pending)
        self.stats.inc("drift.records", len(closed.records))
        if self.state is not None and closed.records:
            body = json.dumps(self.tracker.to_json(), separators=(",", ":")).encode()
            await asyncio.to_thread(atomic.write_bytes, self.state, body)

    def _load(self) -> None:
        """Blocking: the past and alarms a previous run kept."""
        self.loaded = True
        assert self.state is not None
        try:
            doc = atomic.read_json(self.state)
            if doc is not None:
                self.tracker.restore(doc)
        except (DamagedStateError, FormatError) as exc:
            problem = exc.problem if isinstance(exc, DamagedStateError) else str(exc)
            moved = atomic.move_aside(self.state)
            action = "started with no past: alerts against the past resume after a day of windows"
            self.recovered.append(atomic.recovered(self.state, problem, action, moved))

    def status(self) -> dict[str, Any]:
        """For ``/status``: each feature's latest site-wide window and the alerts in force."""
        latest = sorted(self.tracker.latest.items())
        return {
            "enabled": self.settings.enabled,
            "alert_at": self.settings.alert_at,
            "features": [rec.to_json() for _, rec in latest],
            "alerting": [f"{m}/{f}" for (m, f), rec in latest if rec.alerting],
            "alerts": [a.to_json() for a in self.alerts],
            "ignored_features": self.tracker.ignored,
        }
