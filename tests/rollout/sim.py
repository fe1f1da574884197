"""A seeded simulation of a whole site through the real decisions: the site's pure transitions
(:mod:`gateway.core.site`), the poll policy, the aggregator and the gate files.

Nothing waits for the gateway's state before acting. Devices poll at random instants (jittered
intervals) and half of them hold long polls that are answered on any change; the candidate's index
lands at a random instant and its artifact verifies later; the gateway restarts at random instants
(the gate state is written and read back through the real gate store, and what was only in memory
is lost: pending windows, events, long polls); operators hold and release, and the coordinator
pauses, at random. Devices act on what they are told: install the candidate (or fail to download
it), report metrics that follow the story's behaviour, roll back. Hours of site time run in
seconds.

The invariant is checked on every answer that offers the candidate, from what a device sees and the
wave plan alone: the distinct devices ever offered it never exceed what the open wave admits
(:func:`gateway.core.waves.wave_target` for the gate's current wave at the whole site's size, or
the most a first wave sized by its devices' errors admits, :func:`gateway.core.waves.first_wave_most`), no
device is offered a halted or aborted version, and after a halt no new device gets it until a person
releases it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import math
import random
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core import policy
from gateway.core import site as S
from gateway.core.aggregate import Aggregator
from gateway.core.device import DeviceRecord
from gateway.core.gates import Action, Control, Event, Stage
from gateway.core.manifest import Deployment, parse_deployment
from gateway.core.metrics import Sample
from gateway.core.poll_memo import PollMemo, uncached
from gateway.core.settings import GateSettings
from gateway.core.waves import first_wave_most, wave_target
from gateway.rollout.keeper import GateKeeper


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


WINDOW_S = 60.0
REPORT_S = 20.0
TICK_S = 5.0
POLL_S = 30.0
LONG_POLL_S = 60.0

STORY_BEHAVIOUR: dict[str, Behaviour] = {**STORIES, "first_version_crash": BASELINE}
FIRST_VERSION_STORIES = ("first_version_crash",)


def manifest(version: str, health: Mapping[str, Any] | None = None) -> Deployment:
    sha = hashlib.sha256(version.encode()).hexdigest()
    return parse_deployment(
        {
            "model_id": "detector",
            "version": version,
            "artifact_url": f"artifacts/detector/{version}/model.bin",
            "signature_url": f"artifacts/detector/{version}/model.bin.sig",
            "sha256": sha,
            "length": 1000,
            "health_checks": dict(
                health or {"max_cpu_percent": 90, "max_error_rate": 0.05, "warmup_inferences": 300}
            ),
        }
    )


@dataclass
class Device:
    rec: DeviceRecord
    long_poll: bool
    previous: str | None = None  # the slot it came from
    crashed: bool = False  # its app crashed on the candidate: no more metrics
    waiting_until: float | None = None  # holding a long poll until then


@dataclass
class Result:
    stage: str
    ever_ran_candidate: int
    first_wave_size: int
    windows_to_halt: int | None
    rolled_back: int
    admitted: int
    eligible: int
    max_admitted_in_one_step: int
    violations: list[str] = field(default_factory=list)
    polls: int = 0
    long_polls_answered: int = 0
    restarts: int = 0
    decisions: list[str] = field(default_factory=list)
    memo_hits: int = 0  # poll answers the memo gave (each checked against the policy asked afresh)


@dataclass
class Chaos:
    """Random instants for the faults and controls a schedule carries (None: none of that kind)."""

    restarts: int = 0
    holds: int = 0
    pauses: int = 0
    abort: bool = False


class SiteSim:
    def __init__(
        self,
        story: str,
        *,
        seed: int,
        devices: int,
        settings: GateSettings,
        chaos: Chaos,
        download_failure: float,
        folder: Path,
        report_s: float = REPORT_S,
    ) -> None:
        self.report_s = report_s
        self.rng = random.Random(seed)
        self.story = story
        self.behaviour = STORY_BEHAVIOUR[story]
        self.settings = settings
        self.chaos = chaos
        self.download_failure = download_failure
        self.folder = folder
        self.first_version = story in FIRST_VERSION_STORIES
        self.stable = manifest("1.0.0")
        self.candidate = manifest("2.0.0")
        start_version = "0.9.0" if self.first_version else "1.0.0"
        self.devices = {
            f"dev-{i:03d}": Device(
                DeviceRecord(
                    f"dev-{i:03d}",
                    {"hw": ("rev1", "rev2")[i % 2]},
                    model_id="detector",
                    model_version=start_version,
                ),
                long_poll=self.rng.random() < 0.5,
            )
            for i in range(devices)
        }
        self.bias = {d: (self.rng.gauss(0, 3), self.rng.gauss(0, 4)) for d in self.devices}
        self.verified = {self.stable.sha256}
        self.index_version = 1
        self.index: tuple[Deployment, ...] = () if self.first_version else (self.stable,)
        self.commands: dict[str, str] = {}
        self.site = S.Site()
        self.memo = PollMemo()
        self.agg = Aggregator(WINDOW_S, "hw")
        self.windows: list[Any] = []
        self.events: list[Event] = []
        self.queue: list[tuple[float, int, str, Any]] = []
        self.seq = 0
        self.exposed: set[str] = set()
        self.rolled_back: set[str] = set()
        self.halted_since: float | None = None
        self.result = Result("", 0, 0, None, 0, 0, devices, 0)
        self.first_candidate_window: int | None = None
        self.first_exposure_window: int | None = None
        self.window_index = 0
        self.downloaded: set[str] = set()

    # -- the event queue --------------------------------------------------------------------------------

    def at(self, t: float, kind: str, arg: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (t, self.seq, kind, arg))

    def run(self, hours: float) -> Result:
        end = hours * 3600
        self.apply(0.0)
        for d in self.devices:
            self.at(self.rng.uniform(0, POLL_S), "poll", d)
        for k in range(int(end / self.report_s)):
            self.at(k * self.report_s + 1, "report")
        for k in range(1, int(end / WINDOW_S)):
            self.at(k * WINDOW_S, "window")
        for k in range(1, int(end / TICK_S)):
            self.at(k * TICK_S + 0.5, "tick")
        land = self.rng.uniform(0, 600)
        self.at(land, "land")
        self.at(land + self.rng.uniform(1, 120), "verify")
        for _ in range(self.chaos.restarts):
            self.at(self.rng.uniform(land, end / 2), "restart")
        for _ in range(self.chaos.holds):
            t = self.rng.uniform(land, end / 2)
            self.at(t, "control", "hold")
            self.at(t + self.rng.uniform(10, 900), "control", "release")
        for _ in range(self.chaos.pauses):
            t = self.rng.uniform(land, end / 2)
            self.at(t, "pause", "paused")
            self.at(t + self.rng.uniform(10, 900), "pause", None)
        if self.chaos.abort:
            self.at(self.rng.uniform(land, end), "control", "abort")
        while self.queue:
            t, _, kind, arg = heapq.heappop(self.queue)
            if t > end or (kind == "window" and self.finished(t)):
                break
            getattr(self, "on_" + kind)(t, arg)
        gate = self.site.gates.get(self.candidate.key)
        r = self.result
        r.stage = str(gate.stage) if gate else "not judged"
        r.ever_ran_candidate = len(self.exposed)
        r.rolled_back = len(self.rolled_back)
        r.admitted = len(gate.admitted) if gate else 0
        r.decisions = [f"{d.action}: {d.reason}" for d in gate.decisions] if gate else []
        return r

    def finished(self, t: float) -> bool:
        gate = self.site.gates.get(self.candidate.key)
        if gate is None or self.chaos.abort:
            return False
        on_candidate = sum(1 for d in self.devices.values() if d.rec.model_version == "2.0.0")
        if gate.stage == Stage.DONE and on_candidate == len(self.devices):
            return True
        return gate.stopped and on_candidate == 0 and t > 3600

    # -- the gateway side --------------------------------------------------------------------------------

    def live(self) -> list[DeviceRecord]:
        return [d.rec for d in self.devices.values()]

    def transition(self, t: float, change: Callable[[S.Site], tuple[S.Site, S.Effects]]) -> None:
        before = self.site.gates.get(self.candidate.key)
        self.site, effects = change(self.site)
        after = self.site.gates.get(self.candidate.key)
        if after is not None:
            grown = len(after.admitted) - (len(before.admitted) if before else 0)
            self.result.max_admitted_in_one_step = max(self.result.max_admitted_in_one_step, grown)
            if not self.result.first_wave_size and after.admitted:
                self.result.first_wave_size = len(after.admitted)
        for d in effects.decisions:
            if d.deployment != self.candidate.key:
                continue
            if d.action == Action.HALT and self.halted_since is None:
                self.halted_since = t
                first = self.first_candidate_window or self.first_exposure_window  # no metrics: a crash
                if self.result.windows_to_halt is None and first is not None:
                    self.result.windows_to_halt = self.window_index - first + 1
            if d.action == Action.RELEASE and d.by.startswith("operator"):
                self.halted_since = None
        if effects.changed:
            self.wake(t)

    def apply(self, t: float) -> None:
        self.transition(
            t,
            lambda site: S.apply_index(
                site,
                index_version=self.index_version,
                deployments=self.index,
                commands=self.commands,
                now=t,
                settings=self.settings,
                verified=self.verified.__contains__,
                devices=self.live(),
                matrix=None,
            ),
        )

    def on_land(self, t: float, _: Any) -> None:
        self.index_version += 1
        self.index = (*self.index, self.candidate)
        self.apply(t)

    def on_verify(self, t: float, _: Any) -> None:
        self.verified.add(self.candidate.sha256)
        self.wake(t)

    def on_pause(self, t: float, command: str | None) -> None:
        self.index_version += 1
        self.commands = {self.candidate.key: command} if command else {}
        self.apply(t)

    def on_control(self, t: float, action: str) -> None:
        if self.candidate.key not in self.site.gates:
            return
        try:
            self.transition(
                t,
                lambda site: S.on_control(
                    site,
                    self.candidate.key,
                    Control(action, "operator:sim", "simulated"),
                    now=t,
                    settings=self.settings,
                    devices=self.live(),
                    matrix=None,
                ),
            )
        except S.ControlRefused:
            pass

    def on_tick(self, t: float, _: Any) -> None:
        windows, self.windows = self.windows, []
        events, self.events = self.events, []
        self.transition(
            t,
            lambda site: S.tick(
                site,
                now=t,
                settings=self.settings,
                windows=windows,
                events=events,
                devices=self.live(),
                matrix=None,
            ),
        )

    def on_window(self, t: float, _: Any) -> None:
        self.window_index += 1
        closed = self.agg.close_due(t)
        if self.first_candidate_window is None and any(w.key.model_version == "2.0.0" for w in closed):
            self.first_candidate_window = self.window_index  # windows counted from the first metrics
        self.windows += closed

    def on_restart(self, t: float, _: Any) -> None:
        """kill -9 and start again: the gate files are what was last published; memory is gone."""
        keeper = GateKeeper(self.settings, self.folder)
        keeper.store.save(self.site.gates, [], keeper._meta(self.site))
        reloaded = GateKeeper(self.settings, self.folder)
        reloaded.load()
        self.site = reloaded.site
        self.memo = PollMemo()  # a new process remembers no answer
        self.windows, self.events = [], []
        self.agg = Aggregator(WINDOW_S, "hw")
        self.result.restarts += 1
        self.apply(t)
        for d in self.devices.values():
            if d.waiting_until is not None:  # the connection was reset: poll again soon
                d.waiting_until = None
                self.at(t + self.rng.uniform(1, 10), "poll", d.rec.device_id)

    # -- the devices ------------------------------------------------------------------------------------------

    def answer(self, dev: Device, t: float) -> policy.PollAnswer:
        """The gateway's answer through its poll memo, checked against the policy asked afresh."""
        facts: dict[str, Any] = {
            "site": self.site,
            "device": dev.rec,
            "now": t,
            "clock_trusted": True,
            "verified": self.verified.__contains__,
            "matrix": None,
        }
        answer = self.memo.answer(**facts, gates=_Gates(self.site))
        fresh = uncached(**facts, gates=_Gates(self.site))
        if answer != fresh:
            raise AssertionError(f"poll memo gave {answer}, the policy {fresh} ({dev.rec.device_id} at {t})")
        self.result.memo_hits = self.memo.hits
        return answer

    def on_poll(self, t: float, device_id: str) -> None:
        dev = self.devices[device_id]
        self.result.polls += 1
        a = self.answer(dev, t)
        if a.waiting_for is not None:  # its wave may have a free place: the gateway admits it first
            key = a.waiting_for.key
            self.transition(
                t,
                lambda site: S.admit_on_poll(
                    site, key, dev.rec, now=t, settings=self.settings, devices=self.live(), matrix=None
                ),
            )
            a = self.answer(dev, t)
        if self.act(dev, a, t) or not dev.long_poll:
            self.at(t + POLL_S * self.rng.uniform(0.5, 1.5), "poll", device_id)
            return
        dev.waiting_until = t + LONG_POLL_S
        self.at(t + LONG_POLL_S, "long_poll_end", device_id)

    def on_long_poll_end(self, t: float, device_id: str) -> None:
        dev = self.devices[device_id]
        if dev.waiting_until is not None and dev.waiting_until <= t:
            dev.waiting_until = None
            self.on_poll(t, device_id)

    def wake(self, t: float) -> None:
        """Every held long poll re-evaluates its answer at once (the gateway's Changes.notify)."""
        for dev in self.devices.values():
            if dev.waiting_until is None:
                continue
            a = self.answer(dev, t)
            if a.deployment is not None or a.reason == "rollback_previous_slot":
                dev.waiting_until = None
                self.result.long_polls_answered += 1
                self.act(dev, a, t)
                self.at(t + self.rng.uniform(0.1, 2.0), "poll", dev.rec.device_id)

    def act(self, dev: Device, a: policy.PollAnswer, t: float) -> bool:
        """Do what the answer says; True when it told the device to do something."""
        d = a.deployment
        did = dev.rec.device_id
        if a.reason == "rollback_previous_slot":
            self.set_version(dev, dev.previous)
            self.rolled_back.add(did)
            self.events.append(Event(did, "rolled_back", "2.0.0"))
            return True
        if d is None:
            return False
        if a.rollback:
            self.set_version(dev, d.version)
            self.rolled_back.add(did)
            self.events.append(Event(did, "rolled_back", "2.0.0"))
            return True
        if d.version != "2.0.0":
            return False
        self.check(did, t)
        if did not in self.downloaded:
            if self.rng.random() < self.download_failure:
                self.events.append(Event(did, "failed", "2.0.0"))  # the download timed out; retry later
                return True
            self.downloaded.add(did)
            self.events.append(Event(did, "downloaded", "2.0.0"))
        dev.previous = dev.rec.model_version
        self.set_version(dev, "2.0.0")
        dev.crashed = self.story == "first_version_crash"
        self.events.append(Event(did, "activated", "2.0.0"))
        return True

    def set_version(self, dev: Device, version: str | None) -> None:
        dev.rec = dataclasses.replace(dev.rec, model_version=version)
        if version != "2.0.0":
            dev.crashed = False

    def check(self, device_id: str, t: float) -> None:
        """The invariant, on an answer that offers the candidate."""
        gate = self.site.gates.get(self.candidate.key)
        v = self.result.violations
        if gate is None:
            v.append(f"t={t:.0f}: {device_id} offered the candidate before it was judged")
            return
        if gate.stopped:
            v.append(f"t={t:.0f}: {device_id} offered a {gate.stage} candidate")
        if self.halted_since is not None and device_id not in self.exposed:
            v.append(f"t={t:.0f}: new device {device_id} offered the candidate after the halt")
        if not self.exposed:
            self.first_exposure_window = self.window_index + 1
        self.exposed.add(device_id)
        s = self.settings
        bound = wave_target(s.waves, gate.wave, len(self.devices), s.min_devices_per_wave)
        # the first wave may grow by its devices' errors, to this at most (and nobody leaves a wave)
        bound = max(bound, first_wave_most(s.waves, len(self.devices), s.min_devices_per_wave))
        if gate.stage != Stage.DONE and len(self.exposed) > bound:
            v.append(
                f"t={t:.0f}: {len(self.exposed)} devices offered the candidate, wave {gate.wave} admits {bound}"
            )

    def on_report(self, t: float, _: Any) -> None:
        for did, dev in self.devices.items():
            version = dev.rec.model_version
            if version is None or dev.crashed:
                continue
            b = self.behaviour if version == "2.0.0" else BASELINE
            self.agg.add(_sample(self.rng, did, version, b, self.bias[did], t), dev.rec.attrs)


_Gates = S.GatesView  # what the devices' answers are asked of (the leak test swaps it)


DEFAULT_SETTINGS = GateSettings(
    waves=(1.0, 5.0, 10.0, 25.0, 50.0, 100.0),
    min_devices_per_wave=2,
    soak_min_s=300.0,
    min_samples=6,
    silence_after_s=180.0,
)


def run(
    story: str,
    *,
    seed: int = 0,
    devices: int = 200,
    hours: float = 4.0,
    settings: GateSettings | None = None,
    chaos: Chaos | None = None,
    download_failure: float | None = None,
    report_s: float = REPORT_S,
) -> Result:
    if download_failure is None:
        download_failure = 0.6 if story == "network_timeouts" else 0.0
    with tempfile.TemporaryDirectory(prefix="site-sim-") as folder:
        sim = SiteSim(
            story,
            seed=seed,
            devices=devices,
            settings=settings or DEFAULT_SETTINGS,
            chaos=chaos or Chaos(),
            download_failure=download_failure,
            folder=Path(folder),
            report_s=report_s,
        )
        return sim.run(hours)


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
    errors = binomial(rng, n, b.error_rate)
    counts: dict[str, int] = {}
    left, rest = n, 1.0
    for name, share in b.classes:  # a multinomial draw as conditional binomials
        k = binomial(rng, left, min(1.0, share / rest)) if rest > 0 else 0
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


def binomial(rng: random.Random, n: int, p: float) -> int:
    """A binomial draw: Poisson by inversion for small means, normal for large ones."""
    if p <= 0 or n <= 0:
        return 0
    mean = n * p
    if mean > 30:  # normal approximation, fast and close enough for counts this large
        return max(0, min(n, round(rng.gauss(mean, (mean * (1 - p)) ** 0.5))))
    # Poisson by inversion for the small counts (rare classes, errors): close for small p, fast
    k, term = 0, math.exp(-mean)
    total, u = term, rng.random()
    while u > total and k < n:
        k += 1
        term *= mean / k
        total += term
    return k
