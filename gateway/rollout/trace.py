"""A site's recorded metrics (:mod:`gateway.telemetry.trace_log`'s records) turned into a replay
trace (:mod:`gateway.rollout.replay`'s format): which model and versions, who the devices are, when
the candidate came, and each record at the trace's own time.

Two passes over the records, so that a week of a large site never sits in memory: a
:class:`Survey` of every record first (versions, devices, first times), then :meth:`Choice.line` for
each record again. Pure: records in, JSON values out; the command reads and writes the files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from firmware_compat.version import try_version

# the candidate manifest's fields that judge or choose devices (kept in the trace's header)
MANIFEST_FIELDS = (
    "health_checks",
    "expected_classes",
    "min_confidence",
    "target_cohort",
    "rollout_percentage",
    "compatibility",
    "start_time",
    "end_time",
    "data_version",
)


@dataclass(frozen=True)
class Choice:
    """The trace to write: one model, its baseline and candidate, from ``start`` (POSIX seconds)."""

    model_id: str
    baseline: str
    candidate: str
    start: float
    publish_at: float  # the candidate's first record
    devices: tuple[str, ...]

    def header(
        self, attrs: Mapping[str, Mapping[str, str]], poll_interval_s: float, manifest: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {
            "replay": 1,
            "model_id": self.model_id,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "devices": [{"id": d, "attrs": dict(attrs.get(d, {}))} for d in self.devices],
            "poll_interval_s": poll_interval_s,
            "start": self.start,
            "publish_s": round(self.publish_at - self.start, 3),
            "manifest": {k: manifest[k] for k in MANIFEST_FIELDS if k in manifest},
        }

    def line(self, rec: Mapping[str, Any]) -> dict[str, Any] | None:
        """The trace's line for one record, or None when it is not this trace's."""
        version = rec.get("version")
        if rec.get("model_id") != self.model_id or version not in (self.baseline, self.candidate):
            return None
        out = {"t": round(rec["t"] - self.start, 3), "device": rec["device"], "version": version}
        if isinstance(rec.get("metrics"), Mapping):
            return {**out, "metrics": rec["metrics"]}
        if isinstance(rec.get("event"), Mapping):
            return {**out, "event": rec["event"]}
        return None


@dataclass
class _Version:
    first: float
    records: int = 0
    devices: set[str] = field(default_factory=set)


class Survey:
    """The first pass: every model version seen, with its first time, its devices and records."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], _Version] = {}
        self.start: dict[str, float] = {}  # model -> the earliest instant its records cover

    def add(self, rec: Mapping[str, Any]) -> None:
        model, version, device, t = rec.get("model_id"), rec.get("version"), rec.get("device"), rec.get("t")
        if not (isinstance(model, str) and isinstance(version, str) and isinstance(device, str)):
            return
        if isinstance(t, bool) or not isinstance(t, int | float):
            return
        v = self.versions.get((model, version))
        if v is None:
            v = self.versions[model, version] = _Version(float(t))
        v.first = min(v.first, float(t))
        v.records += 1
        v.devices.add(device)
        w = rec.get("window_s")
        begin = float(t) - (float(w) / 2 if isinstance(w, int | float) and "metrics" in rec else 0.0)
        self.start[model] = min(self.start.get(model, begin), begin)

    def choose(
        self, model: str | None = None, baseline: str | None = None, candidate: str | None = None
    ) -> Choice:
        """The model (the only one recorded, unless named) and its two newest versions (unless
        named). ValueError says in words what is missing."""
        models = sorted({m for m, _ in self.versions})
        if not models:
            raise ValueError("no metrics or events are recorded in that time")
        if model is None:
            if len(models) > 1:
                raise ValueError(
                    f"metrics of {len(models)} models are recorded ({', '.join(models)}): name one with --model"
                )
            model = models[0]
        mine = {v: info for (m, v), info in self.versions.items() if m == model}
        if not mine:
            raise ValueError(
                f"nothing of model {model} is recorded in that time (recorded: {', '.join(models)})"
            )
        if (baseline is None) != (candidate is None):
            raise ValueError("--baseline and --candidate go together (or leave both out)")
        if baseline is None or candidate is None:
            if len(mine) < 2:
                raise ValueError(
                    f"only {model}@{next(iter(mine))} is recorded in that time: a trace needs a baseline "
                    "and a candidate (a longer --since, or --baseline and --candidate)"
                )
            parsed = {v: try_version(v) for v in mine}
            if all(p is not None for p in parsed.values()):
                order = sorted(mine, key=lambda v: parsed[v])  # type: ignore[arg-type,return-value]
            else:  # a version that is not a version number: the order they came in
                order = sorted(mine, key=lambda v: mine[v].first)
            baseline, candidate = order[-2], order[-1]
        for v in (baseline, candidate):
            if v not in mine:
                raise ValueError(
                    f"nothing of {model}@{v} is recorded in that time (recorded: {', '.join(sorted(mine))})"
                )
        if baseline == candidate:
            raise ValueError("the baseline and the candidate must differ")
        devices = mine[baseline].devices | mine[candidate].devices
        return Choice(
            model,
            baseline,
            candidate,
            self.start[model],
            mine[candidate].first,
            tuple(sorted(devices)),
        )
