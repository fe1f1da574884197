"""``ota-gateway demo``: a whole site in one process, to watch a canary gate at work.

It makes a signing key and a registry folder, publishes ``detector`` 1.0.0, starts a gateway (the
embedded default ports on loopback, or free ones when those are busy), and runs a simulated site of
N devices, each the reference agent (:mod:`gateway.agent`) with made-up inference figures. Once
every device runs 1.0.0 it publishes 2.0.0: by default a bad candidate that burns CPU, so the gate
halts it in its first wave and its devices roll back; ``--good-candidate`` goes through every wave.
The story is told on the terminal from the operator API (``GET /gates``), the one the dashboard
reads; the dashboard URL is printed first. Gate settings are short for the demo (2 s windows, 15 s
soak, a few samples) and nothing is announced on the LAN. Ctrl-C stops it and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import shlex
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway import registry
from gateway.agent.agent import DeviceAgent
from gateway.agent.simulate import BURNS_CPU, HEALTHY, SimulatedInference
from gateway.commands.serve import own_command
from gateway.core import settings as S
from gateway.core.errors import ConfigError
from gateway.core.events import DeviceEvent
from gateway.core.gates import Verdict
from gateway.core.gates.words import say
from gateway.core.human import wave
from gateway.service.wiring import Gateway

MODEL = "detector"
V1, V2 = "1.0.0", "2.0.0"
HEALTH = {"max_cpu_percent": 50.0, "warmup_inferences": 40.0}
METRICS_INTERVAL_S = 1.0
GATES = S.GateSettings(
    first_version="open",  # 1.0.0 is the site's starting point, not the story
    waves=(10.0, 50.0, 100.0),
    min_devices_per_wave=2,
    soak_min_s=15.0,
    reference_wait_s=20.0,
    min_samples=4,
    silence_after_s=30.0,
)


def _listen(host: str, port: int) -> tuple[str, bool]:
    """``host:port`` when it is free, else ``host:0`` (the system picks) and False."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return f"{host}:0", False
    return f"{host}:{port}", True


def demo_settings(root: Path, args: argparse.Namespace) -> tuple[S.Settings, list[str]]:
    notes: list[str] = []
    listens = {}
    for name, given, default in (
        ("device API", args.http, 8080),
        ("MQTT broker", args.mqtt, 1883),
        ("operator dashboard", args.operator, 8081),
    ):
        if given:
            listens[name] = given
            continue
        listens[name], free = _listen("127.0.0.1", default)
        if not free:
            notes.append(f"port {default} is busy: the {name} takes a free port (printed below)")
    settings = S.Settings(
        site="demo",
        data_dir=str(root / "gateway"),
        http=S.HttpSettings(listen=listens["device API"]),
        mqtt=S.MqttSettings(listen=listens["MQTT broker"]),
        operator=S.OperatorSettings(listen=listens["operator dashboard"]),
        trust=S.TrustSettings(trusted_keys=(str(root / "keys" / "public.pem"),)),
        mirror=S.MirrorSettings(
            upstream=str(root / "registry"), poll_interval_s=1.0, retry_initial_s=0.2, retry_max_s=2.0
        ),
        devices=S.DeviceSettings(poll_interval_s=5.0, max_wait_s=30.0),
        telemetry=S.TelemetrySettings(window_s=2.0),
        uplink=S.UplinkSettings(report_interval_s=2.0),
        gates=GATES,
        discovery=S.DiscoverySettings(enabled=False),  # a demo is not announced on the LAN
    )
    return settings, notes


def _url(addresses: list[Any]) -> str:
    host, port = addresses[0][:2]
    return f"{host}:{port}"


def _gate_status_hint(data: Path) -> str:
    """The gate status command as this user can type it from any folder: this very
    ``ota-gateway`` by its absolute path, and the demo's data folder (whose ``gateway.json`` says
    where the operator API listens, whichever port it took)."""
    return f"{own_command()} gate status --data {shlex.quote(str(data.resolve()))}"


def _verdict(v: dict[str, Any]) -> str:
    """A verdict of the audit in the gate's own words (the dashboard's and ``gate status``'s)."""
    try:
        return say(Verdict(**v))
    except (TypeError, ValueError):
        return str(v.get("criterion", "?"))


def _sizes(verdicts: list[dict[str, Any]]) -> str:
    n = next((v.get("samples") for v in verdicts if v.get("samples")), None) or {}
    devices, windows = n.get("devices", "?"), n.get("windows", "?")
    return f"{devices} device{'' if devices == 1 else 's'}, {windows} window{'' if windows == 1 else 's'}"


@dataclass
class Story:
    """What the terminal has been told, from the devices' events and the gate's decisions."""

    devices: int
    t0: float = field(default_factory=time.monotonic)
    running: dict[str, str] = field(default_factory=dict)  # device -> version it runs
    rolled_back: set[str] = field(default_factory=set)
    ran_candidate: set[str] = field(default_factory=set)
    seen: int = 0  # audit entries told
    stage: str = ""
    wave: int = 0
    halted_at: float | None = None
    new_runs: list[str] = field(default_factory=list)  # device news, told after the gate's decisions
    new_back: list[str] = field(default_factory=list)
    nudge: asyncio.Event = field(default_factory=asyncio.Event)

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:6.1f}s] {text}", flush=True)

    def flush(self) -> None:
        """Devices' news, after the gate decisions that caused it (the narrator looks first)."""
        on_v2 = sum(v == V2 for v in self.running.values())
        if self.new_runs:
            self.say(
                f"{', '.join(sorted(self.new_runs))} now run{'s' * (len(self.new_runs) == 1)} {V2} ({on_v2}/{self.devices} in all)"
            )
        if self.new_back:
            self.say(f"{', '.join(sorted(self.new_back))} rolled back to {V1} (told by the gateway)")
        self.new_runs.clear()
        self.new_back.clear()

    def on_event(self, e: DeviceEvent) -> None:
        device, event, version = e.device_id, e.event, e.version or ""
        if event == "healthy":
            self.running[device] = version
            if version == V2:
                self.ran_candidate.add(device)
                self.new_runs.append(device)
                self.nudge.set()
            elif sum(v == V1 for v in self.running.values()) in (self.devices // 2, self.devices):
                on_v1 = sum(v == V1 for v in self.running.values())
                self.say(f"{on_v1}/{self.devices} devices run {MODEL} {V1}")
        elif event == "rolled_back":
            self.rolled_back.add(device)
            self.running[device] = V1
            self.new_back.append(device)
            self.nudge.set()

    def on_gates(self, doc: dict[str, Any]) -> None:
        audit = [a for a in doc.get("audit", []) if a.get("deployment") == f"{MODEL}@{V2}"]
        for a in audit[self.seen :]:
            self.wave = int(a.get("wave", 0))
            action, reason = a.get("action"), a.get("reason", "")
            if action == "halt":
                failing = [v for v in a.get("verdicts", []) if v.get("result") == "worse"]
                self.say(f"gate {MODEL}@{V2} HALTED at {wave(self.wave)} ({_sizes(failing)}):")
                for v in failing:
                    print(f"{'':10}{_verdict(v)}", flush=True)
                self.halted_at = time.monotonic()
            elif action in ("open", "advance", "done"):
                self.say(f"gate {MODEL}@{V2}: {reason}")
            else:
                self.say(f"gate {MODEL}@{V2}: {action}: {reason}")
        self.seen = max(self.seen, len(audit))
        for g in doc.get("gates", []):
            if g.get("deployment") == f"{MODEL}@{V2}":
                self.stage = g.get("stage", "")

    def finished(self) -> bool:
        if self.stage == "done":
            return True
        if self.stage != "halted":
            return False
        return not any(v == V2 for v in self.running.values())


async def watch_gates(story: Story, operator: str, stop: asyncio.Event) -> None:
    """The gate's decisions as the operator API shows them (the dashboard's source)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        while not stop.is_set():
            try:
                async with s.get(f"http://{operator}/gates") as r:
                    if r.status == 200:
                        story.on_gates(await r.json())
            except (aiohttp.ClientError, TimeoutError, ValueError):
                pass  # the next look will do
            story.flush()
            story.nudge.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(story.nudge.wait(), 0.5)


def make_site(gw: Gateway, root: Path, n: int, bad: bool, story: Story) -> list[DeviceAgent]:
    http, mqtt = _url(gw.http_addresses), gw.broker.addresses["tcp"] if gw.broker else None
    pem = (root / "keys" / "public.pem").read_bytes()
    profiles = {V1: HEALTHY, V2: BURNS_CPU if bad else HEALTHY}
    agents = []
    for i in range(n):
        device = f"cam-{i + 1:02d}"
        agents.append(
            DeviceAgent(
                f"http://{http}",
                device,
                pem,
                root / "devices" / device,
                attrs={"fw": "2.1.0", "hw": "rev2", "line": str(i % 3 + 1)},
                model_id=MODEL,
                wait_s=20.0,
                poll_interval_s=5.0,
                metrics_interval_s=METRICS_INTERVAL_S,
                metrics_source=SimulatedInference(
                    profiles, interval_s=METRICS_INTERVAL_S, rng=random.Random(i)
                ),
                mqtt=(str(mqtt[0]), int(mqtt[1])) if mqtt else None,
                listeners=[story.on_event],
            )
        )
    return agents


async def until(cond: Any, timeout_s: float, stop: asyncio.Event) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if stop.is_set() or time.monotonic() > deadline:
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    return True


async def script(root: Path, gw: Gateway, story: Story, bad: bool, stop: asyncio.Event) -> None:
    """The site's day: everyone on 1.0.0, a few windows of baseline, then the candidate lands."""
    if not await until(lambda: sum(v == V1 for v in story.running.values()) >= story.devices, 90, stop):
        if stop.is_set():
            return
        story.say("not every device got 1.0.0 in 90 s; publishing the candidate anyway")
    await until(lambda: False, 3 * gw.settings.telemetry.window_s, stop)  # windows of baseline figures
    what = "a bad candidate: it burns CPU (~72%, the cloud allows 50%)" if bad else "a good candidate"
    story.say(f"publishing {MODEL} {V2}: {what}")
    await asyncio.to_thread(_publish, root, V2)
    if await until(story.finished, 150, stop):
        if story.stage == "done":
            story.say(f"rollout of {V2} complete: every wave passed")
        else:
            story.say(
                f"halted and rolled back: {len(story.rolled_back)} device(s) went back to {V1}, "
                f"{story.devices - len(story.ran_candidate)} never got {V2}"
            )
    elif not stop.is_set():
        story.say(f"no outcome yet (gate stage {story.stage or 'none'}); see the dashboard")
    story.say("the dashboard keeps showing it; Ctrl-C stops the demo")


def _publish(root: Path, version: str) -> None:
    model = root / "models" / f"{MODEL}-{version}.onnx"
    model.parent.mkdir(exist_ok=True)
    model.write_bytes(os.urandom(256 << 10))
    registry.publish(
        root / "registry",
        model,
        root / "keys" / "private.pem",
        model_id=MODEL,
        version=version,
        site="demo",
        health=HEALTH,
    )


async def run_demo(root: Path, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings, notes = demo_settings(root, args)
    await asyncio.to_thread(registry.keygen, root / "keys")
    (root / "registry").mkdir()
    await asyncio.to_thread(_publish, root, V1)
    gw = Gateway.from_settings(settings)
    await gw.start()
    story = Story(args.devices)
    try:
        for note in notes:
            story.say(note)
        operator = _url(gw.operator_addresses)
        story.say(f"dashboard: http://{operator}/   (or: {_gate_status_hint(settings.data_path)})")
        story.say(
            f"device API http://{_url(gw.http_addresses)}/, MQTT {_url(list(gw.broker.addresses.values())) if gw.broker else 'off'}, data in {root}"
        )
        story.say(f"{MODEL} {V1} published; {args.devices} simulated devices start polling")
        agents = make_site(gw, root, args.devices, args.bad, story)
        device_stop = asyncio.Event()
        tasks = [asyncio.create_task(a.run(device_stop), name=a.device_id) for a in agents]
        tasks.append(asyncio.create_task(watch_gates(story, operator, device_stop), name="narrator"))
        tasks.append(asyncio.create_task(script(root, gw, story, args.bad, stop), name="script"))
        await stop.wait()
        story.say("stopping")
        device_stop.set()
        _, pending = await asyncio.wait(tasks, timeout=3)
        for t in pending:  # a long poll in flight
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await gw.stop()


def cmd_demo(args: argparse.Namespace) -> int:
    if args.devices < 4:
        raise ConfigError("command line", "--devices", "at least 4 (waves need a few devices)")
    keep = args.data is not None
    root = Path(args.data) if keep else Path(tempfile.mkdtemp(prefix="ota-gateway-demo-"))
    if keep and root.exists() and any(root.iterdir()):
        raise ConfigError("command line", "--data", f"an empty or new folder ({root} is not empty)")
    root.mkdir(parents=True, exist_ok=True)
    if not args.verbose:
        logging.getLogger().setLevel(logging.ERROR)  # the story is told on stdout
    try:
        asyncio.run(run_demo(root.resolve(), args))
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="a gateway, a registry and a simulated site: watch a bad candidate halt")
    p.add_argument("--devices", type=int, default=20, help="simulated devices (default 20)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--bad-candidate", dest="bad", action="store_true", default=True, help="(default)")
    which.add_argument("--good-candidate", dest="bad", action="store_false", help="2.0.0 passes every wave")
    p.add_argument("--data", help="keep everything in this new folder (default: a temporary one, removed)")
    p.add_argument("--http", metavar="HOST:PORT", help="device API (default 127.0.0.1:8080, or a free port)")
    p.add_argument("--mqtt", metavar="HOST:PORT", help="broker (default 127.0.0.1:1883, or a free port)")
    p.add_argument("--operator", metavar="HOST:PORT", help="dashboard (default 127.0.0.1:8081, or free)")
    p.add_argument("--verbose", action="store_true", help="the gateway's own log lines too")
    p.set_defaults(func=cmd_demo)
