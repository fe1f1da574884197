"""``gate replay``: the site's real gate decisions run over a recorded or simulated site, at the
trace's own time, as fast as the CPU allows.

The same code path as the live gateway: the metrics go through :func:`gateway.core.metrics.parse_metrics`
and the :class:`~gateway.core.aggregate.Aggregator`, the index through :func:`gateway.core.site.apply_index`,
the evidence through :func:`gateway.core.site.tick`, and every device's poll through the poll policy
(:mod:`gateway.core.policy`, by way of the poll memo, as the endpoint asks it). Only time is simulated.

The trace (JSON lines, README "Replaying a site"):

* line 1, the header: ``{"replay": 1, "model_id", "baseline", "candidate", "devices": [{"id", "attrs"}],
  "poll_interval_s", "start", "publish_s" (optional, when the candidate's index lands; default 0),
  "manifest" (optional manifest fields for the candidate: health_checks, expected_classes, ...)}``;
* then records in time order: ``{"t", "device", "version", "metrics": {...}}`` or ``{..., "event": {...}}``.

With ``gates.shadow``, a device told to run the candidate in shadow (the gate's shadow stage) keeps
its version and is delivered the candidate's shadow records (``"shadow": true`` in the metrics, with
their ``agreement`` on the same frames) until it is told something else; it never counts as exposed.

Devices start on the baseline. A device switches to the candidate at its first poll after it is
admitted, and back at its first poll after a rollback; polls come every ``poll_interval_s`` with a
seeded jitter (0.5 to 1.5 times). A record is delivered only while its device runs the record's
version: a trace may hold what each device would report on either version (a simulation), or one
version per device (a site's real history, where a device has nothing to say on the other).

Pure: values in, a :class:`ReplayResult` out; the CLI reads the files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core import site as S
from gateway.core.aggregate import Aggregator
from gateway.core.device import DeviceRecord
from gateway.core.errors import FormatError
from gateway.core.events import parse_event
from gateway.core.gates import Action, Event, Stage
from gateway.core.manifest import Deployment, parse_deployment, valid_id
from gateway.core.metrics import parse_metrics
from gateway.core.poll_memo import PollMemo
from gateway.core.settings import GateSettings

# how often the replayed gateway steps its gates between windows, unless told (the CLI steps at the
# live site loop's pace, ``Settings.gate_step_s``: 5 s with one-minute windows)
TICK_S = 15.0


@dataclass(frozen=True)
class Header:
    model_id: str
    baseline: str
    candidate: str
    devices: tuple[tuple[str, Mapping[str, str]], ...]
    poll_interval_s: float
    start: float
    publish_s: float
    manifest: Mapping[str, Any]

    @classmethod
    def parse(cls, doc: Any) -> Header:
        if not isinstance(doc, Mapping) or doc.get("replay") != 1:
            raise FormatError('line 1: expected the header {"replay": 1, ...}')
        for key in ("model_id", "baseline", "candidate"):
            if not isinstance(doc.get(key), str) or not valid_id(doc[key]):
                raise FormatError(f"line 1: {key} must be an id (letters, digits, '.', '_', '-')")
        devices = doc.get("devices")
        if not isinstance(devices, list) or not devices:
            raise FormatError("line 1: devices must be a non-empty list of {id, attrs}")
        out: list[tuple[str, Mapping[str, str]]] = []
        for d in devices:
            if not isinstance(d, Mapping) or not isinstance(d.get("id"), str) or not valid_id(d["id"]):
                raise FormatError("line 1: every device needs an id (letters, digits, '.', '_', '-')")
            attrs = d.get("attrs", {})
            if not isinstance(attrs, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in attrs.items()
            ):
                raise FormatError(f"line 1: attrs of {d['id']} must map strings to strings")
            out.append((d["id"], dict(attrs)))
        numbers = {}
        for key, default in (("poll_interval_s", 60.0), ("start", 0.0), ("publish_s", 0.0)):
            v = doc.get(key, default)
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise FormatError(f"line 1: {key} must be a number of at least 0")
            numbers[key] = float(v)
        if numbers["poll_interval_s"] <= 0:
            raise FormatError("line 1: poll_interval_s must be above 0")
        manifest = doc.get("manifest", {})
        if not isinstance(manifest, Mapping):
            raise FormatError("line 1: manifest must be an object")
        return cls(
            doc["model_id"],
            doc["baseline"],
            doc["candidate"],
            tuple(out),
            numbers["poll_interval_s"],
            numbers["start"],
            numbers["publish_s"],
            dict(manifest),
        )

    def deployment(self, version: str, extra: Mapping[str, Any]) -> Deployment:
        sha = hashlib.sha256(f"{self.model_id}@{version}".encode()).hexdigest()
        return parse_deployment(
            {
                **extra,
                "model_id": self.model_id,
                "version": version,
                "artifact_url": f"artifacts/{self.model_id}/{version}/model.bin",
                "signature_url": f"artifacts/{self.model_id}/{version}/model.bin.sig",
                "sha256": sha,
                "length": 1,
            }
        )


@dataclass
class ReplayResult:
    trace: str
    outcome: str  # halted, done or undecided
    halted_at_s: float | None  # from the trace's start
    exposed: int  # devices that ever ran the candidate
    full_at_s: float | None  # when the last wave was admitted
    published_at_s: float
    decisions: list[dict[str, Any]] = field(default_factory=list)
    first_wave: int = 0  # devices the first wave admitted

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _records(lines: Iterator[Any]) -> Iterator[tuple[int, float, str, str, Mapping[str, Any], bool]]:
    last = 0.0
    for n, doc in enumerate(lines, start=2):
        if not isinstance(doc, Mapping):
            raise FormatError(f"line {n}: expected a JSON object")
        t, device, version = doc.get("t"), doc.get("device"), doc.get("version")
        if isinstance(t, bool) or not isinstance(t, int | float) or t < last:
            raise FormatError(f"line {n}: t must be a number of seconds, in time order")
        if not isinstance(device, str) or not isinstance(version, str):
            raise FormatError(f"line {n}: device and version are required strings")
        is_event = "event" in doc
        body = doc.get("event") if is_event else doc.get("metrics")
        if not isinstance(body, Mapping):
            raise FormatError(f"line {n}: metrics (or event) must be an object")
        last = float(t)
        yield n, last, device, version, body, is_event


class _Replay:
    """One replayed site: its gateway's decision state, its devices, and time."""

    def __init__(
        self,
        h: Header,
        settings: GateSettings,
        seed: int,
        window_s: float,
        cohort_attribute: str,
        tick_s: float = TICK_S,
    ) -> None:
        self.h, self.settings, self.window_s, self.tick_s = h, settings, window_s, tick_s
        self.rng = random.Random(seed)
        self.baseline = h.deployment(h.baseline, {})
        self.candidate = h.deployment(h.candidate, h.manifest)
        self.recs = {
            d: DeviceRecord(d, a, model_id=h.model_id, model_version=h.baseline) for d, a in h.devices
        }
        self.agg = Aggregator(window_s, cohort_attribute)
        self.memo = PollMemo()
        self.site = S.Site()
        self.windows: list[Any] = []
        self.events: list[Event] = []
        self.exposed: set[str] = set()
        self.shadowing: set[str] = set()  # devices running the candidate in shadow beside their own
        self.result = ReplayResult("", "undecided", None, 0, None, h.publish_s)
        self.queue: list[tuple[float, int, str, str]] = []  # (t, seq, kind, device)
        self.seq = 0
        self.published = False

    def at(self, t: float, kind: str, device: str = "") -> None:
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, kind, device))

    def now(self, t: float) -> float:
        return self.h.start + t

    def transition(self, t: float, effects: S.Effects) -> None:
        gate = self.site.gates.get(self.candidate.key)
        for d in effects.decisions:
            if d.deployment != self.candidate.key:
                continue
            self.result.decisions.append({**d.to_json(), "t": round(d.at - self.h.start, 3)})
            if d.action == Action.HALT and self.result.halted_at_s is None:
                self.result.halted_at_s = round(t, 3)
        if gate is None or self.result.full_at_s is not None:
            return
        if gate.stage == Stage.DONE or (
            gate.stage == Stage.WAVES and all(d in gate.admitted for d in self.recs)
        ):
            self.result.full_at_s = round(t, 3)

    def apply(self, t: float) -> None:
        index = (self.baseline, self.candidate) if self.published else (self.baseline,)
        self.site, effects = S.apply_index(
            self.site,
            index_version=2 if self.published else 1,
            deployments=index,
            commands={},
            now=self.now(t),
            settings=self.settings,
            verified=lambda sha: True,
            devices=list(self.recs.values()),
            matrix=None,
        )
        self.transition(t, effects)

    def tick(self, t: float) -> None:
        self.windows += self.agg.close_due(self.now(t))
        windows, self.windows = self.windows, []
        events, self.events = self.events, []
        self.site, effects = S.tick(
            self.site,
            now=self.now(t),
            settings=self.settings,
            windows=windows,
            events=events,
            devices=list(self.recs.values()),
            matrix=None,
        )
        self.transition(t, effects)

    def poll(self, t: float, device: str) -> None:
        rec = self.recs[device]
        a = self.memo.answer(self.site, rec, self.now(t), True, lambda sha: True, None)
        to: str | None = None
        if a.shadow:  # the candidate beside its own model, never switched to
            self.shadowing.add(device)
            self.at(t + self.h.poll_interval_s * self.rng.uniform(0.5, 1.5), "poll", device)
            return
        self.shadowing.discard(device)
        if a.reason == "rollback_previous_slot":
            to = self.h.baseline
        elif a.deployment is not None and a.deployment.version != rec.model_version:
            to = a.deployment.version
        if to is not None and to != rec.model_version:
            if to == self.h.candidate:
                self.exposed.add(device)
                self.events += [
                    Event(device, "downloaded", to),
                    Event(device, "activated", to),
                ]
            elif rec.model_version == self.h.candidate:
                self.events.append(Event(device, "rolled_back", self.h.candidate))
            self.recs[device] = dataclasses.replace(rec, model_version=to)
        self.at(t + self.h.poll_interval_s * self.rng.uniform(0.5, 1.5), "poll", device)

    def deliver(
        self, n: int, t: float, device: str, version: str, body: Mapping[str, Any], event: bool
    ) -> None:
        rec = self.recs.get(device)
        if rec is not None and not event and body.get("shadow") is True:
            if device not in self.shadowing or version != self.h.candidate or rec.model_version == version:
                return  # not running the candidate in shadow now
        elif rec is None or rec.model_version != version:
            return  # the device does not run that version now: it has nothing to say on it
        try:
            if event:
                name, _model, ver, _reason = parse_event(body)
                self.events.append(Event(device, name, ver or version))
            else:
                sample = parse_metrics(device, dict(body), self.now(t), model_id=self.h.model_id)
                if sample.model_version == version:
                    self.agg.add(sample, rec.attrs)
        except FormatError as exc:
            raise FormatError(f"line {n}: {exc}") from None

    def run_until(self, t: float) -> None:
        while self.queue and self.queue[0][0] <= t:
            at, _, kind, device = heapq.heappop(self.queue)
            if kind == "poll":
                self.poll(at, device)
            elif kind == "tick":
                self.tick(at)
                self.at(at + self.tick_s, "tick")
            elif kind == "publish":
                self.published = True
                self.apply(at)


def replay_trace(
    lines: Iterable[Any],
    settings: GateSettings,
    *,
    name: str = "",
    seed: int = 0,
    window_s: float = 60.0,
    cohort_attribute: str = "hw",
    tick_s: float = TICK_S,
) -> ReplayResult:
    """Replay one trace (its parsed JSON lines, header first). :class:`FormatError` names the line."""
    it = iter(lines)
    try:
        head = next(it)
    except StopIteration:
        raise FormatError("line 1: the trace is empty") from None
    h = Header.parse(head)
    r = _Replay(h, settings, seed, window_s, cohort_attribute, tick_s)
    r.result.trace = name
    r.apply(0.0)
    for d, _ in h.devices:
        r.at(r.rng.uniform(0, h.poll_interval_s), "poll", d)
    r.at(h.publish_s, "publish")
    r.at(tick_s, "tick")
    end = 0.0
    for n, t, device, version, body, event in _records(it):
        r.run_until(t)
        r.deliver(n, t, device, version, body, event)
        end = t
    r.run_until(end + window_s)  # the last window closes and is judged
    gate = r.site.gates.get(r.candidate.key)
    if gate is not None and gate.stopped:
        r.result.outcome = "halted"
    elif gate is not None and gate.stage == Stage.DONE:
        r.result.outcome = "done"
    r.result.exposed = len(r.exposed)
    if gate is not None:
        r.result.first_wave = sum(1 for w in gate.admitted.values() if w == 0)
    return r.result
