"""Figures: a real ``ota-gateway serve`` that runs out of file descriptors, and how it comes back.

Run: ``python tests/bench/fd_exhaustion.py [--nofile 1024] [--connections 1500] [--hold 5]``
(``--checkout /work/main`` runs the same scenario against another checkout, for a before/after.)

The gateway is started with ``RLIMIT_NOFILE`` = ``--nofile`` (soft and hard), then the script opens
``--connections`` idle TCP connections to its device API and its MQTT port (two thirds and one
third) and holds them for ``--hold`` seconds after the gateway first reports failed accepts. Then it
closes them all and measures how long until a device poll and an MQTT CONNECT succeed again. It
prints: connections opened, the accept failures the gateway counted, the log lines written while
the descriptors were used up and in all, tracebacks, the gateway's CPU use meanwhile, the recovery
time, and whether the process stayed up. ``tests/system/test_fd_exhaustion.py`` runs the same scenario, smaller, and asserts the bounds
(never a time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from tests.bench.common import cpu_seconds  # noqa: E402
from tests.peers import free_port, gateway_process, stop, wait_port  # noqa: E402

LAB_CONNECT = bytes((0x10, 17)) + b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x05dev-1"  # lab mode: id = client id


@dataclass
class Figures:
    nofile: int
    connections_opened: int  # idle connections the gateway's port took (accepted or in its backlog)
    accept_errors: int  # failed accept() calls the gateway counted (HTTP and MQTT)
    log_lines_exhausted: int  # stderr lines from the first failed accept until recovery
    log_lines_total: int  # stderr lines from start to recovery
    tracebacks: int
    cpu_percent_exhausted: float  # the gateway's CPU use while held at the limit
    recovery_s: float  # from closing the idle connections until a poll and a CONNECT both worked
    poll_status: int
    connack: str
    alive: bool
    sample: list[str]  # the first log lines written while exhausted


def _limit(nofile: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))


def _get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def _mqtt_connack(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(LAB_CONNECT)
        return s.recv(4)


def _lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()


def _until(cond: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a condition with a deadline


def scenario(
    work: Path, *, nofile: int, connections: int, hold_s: float, checkout: Path | None = None
) -> Figures:
    """Run the whole story once; returns the figures. The process is always stopped."""
    http_port, operator_port, mqtt_port = free_port(), free_port(), free_port()
    (work / "upstream").mkdir(exist_ok=True)
    log_path = work / "stderr.log"
    env = {
        "OTA_GATEWAY_MQTT__CONNECT_TIMEOUT_S": "600",  # idle connections stay for the whole story
        "OTA_GATEWAY_MQTT__LAB_MODE": "true",
        "OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "3600",
    }
    if checkout is None:
        env["OTA_GATEWAY_HTTP__HEADER_TIMEOUT_S"] = "600"
    else:  # a checkout from before http.header_timeout_s: its HTTP server has no such timeout
        env["PYTHONPATH"] = str(checkout)
    args = ["--data", str(work / "data"), "--upstream", str(work / "upstream"),
            "--http", f"127.0.0.1:{http_port}", "--operator", f"127.0.0.1:{operator_port}",
            "--mqtt", f"127.0.0.1:{mqtt_port}"]  # fmt: skip
    held: list[socket.socket] = []
    with log_path.open("wb") as log:
        proc = gateway_process(
            args, env=env, stderr=log, preexec_fn=lambda: _limit(nofile), cwd=str(checkout or ROOT)
        )
        try:
            wait_port(http_port, 20)
            wait_port(mqtt_port, 20)
            started = len(_lines(log_path))
            for i in range(connections):
                port = mqtt_port if i % 3 == 2 else http_port
                try:
                    held.append(socket.create_connection(("127.0.0.1", port), timeout=1))
                except OSError:
                    break  # the backlog is full too: enough
            mark = len(_lines(log_path))

            def failing() -> bool:
                text = "\n".join(_lines(log_path)[started:])
                return "accept() failures" in text or "out of system resource" in text

            _until(failing, 30, "the gateway to run out of descriptors")
            gw = psutil.Process(proc.pid)
            cpu_before, wall_before = cpu_seconds([gw]), time.monotonic()
            time.sleep(hold_s)  # the exhaustion lasts this long: a scenario parameter, not a wait
            cpu_percent = 100 * (cpu_seconds([gw]) - cpu_before) / (time.monotonic() - wall_before)
            closed_at = time.monotonic()
            for s in held:
                s.close()
            status, connack = 0, b""
            deadline = closed_at + 60
            while time.monotonic() < deadline:
                try:
                    status, _ = _get(f"http://127.0.0.1:{http_port}/devices/dev-1/updates?fw=1.0.0")
                    connack = _mqtt_connack(mqtt_port)
                except OSError:
                    time.sleep(0.05)  # polling a condition with a deadline
                    continue
                if status in (200, 204) and connack == bytes((0x20, 2, 0, 0)):
                    break
            recovery_s = time.monotonic() - closed_at
            lines = _lines(log_path)
            counters: dict[str, int] = {}
            try:
                _, body = _get(f"http://127.0.0.1:{operator_port}/status")
                counters = json.loads(body).get("counters", {})
                mqtt = json.loads(body).get("mqtt", {})
                counters["mqtt.accept_errors"] = int(mqtt.get("accept_errors", 0))
            except (OSError, ValueError):
                pass
            return Figures(
                nofile=nofile,
                connections_opened=len(held),
                accept_errors=sum(v for k, v in counters.items() if k.endswith("accept_errors")),
                log_lines_exhausted=len(lines) - mark,
                log_lines_total=len(lines),
                tracebacks=sum(1 for line in lines if line.startswith("Traceback")),
                cpu_percent_exhausted=round(cpu_percent, 1),
                recovery_s=round(recovery_s, 3),
                poll_status=status,
                connack=connack.hex(),
                alive=proc.poll() is None,
                sample=lines[mark : mark + 40],
            )
        finally:
            for s in held:
                s.close()
            stop(proc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nofile", type=int, default=1024)
    ap.add_argument("--connections", type=int, default=1500)
    ap.add_argument("--hold", type=float, default=5.0, help="seconds the descriptors stay used up")
    ap.add_argument("--checkout", type=Path, default=None, help="run another checkout's gateway")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.connections + 64:  # this script holds one descriptor per connection itself
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.connections + 256), hard))
    with tempfile.TemporaryDirectory() as tmp:
        figures = scenario(
            Path(tmp), nofile=a.nofile, connections=a.connections, hold_s=a.hold, checkout=a.checkout
        )
    print(f"gateway: {a.checkout or ROOT}")
    for key, value in asdict(figures).items():
        if key != "sample":
            print(f"  {key:22} {value}")
    print("  first log lines while exhausted:")
    for line in figures.sample[: int(os.environ.get("FD_SAMPLE_LINES", "6"))]:
        print(f"    {line[:160]}")
    sys.exit(0 if figures.alive else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
