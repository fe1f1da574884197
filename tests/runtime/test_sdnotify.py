"""systemd's notify protocol against the real ``serve`` process and a real unix datagram socket.

The test plays systemd: it binds a datagram socket (a path, and an abstract ``@name``), starts the
gateway with ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` pointing at it, and reads what arrives:
``READY=1`` (with the process's ``MAINPID`` and a ``STATUS=`` line) once it serves, ``WATCHDOG=1``
repeatedly at half the watchdog timeout (from the loop, also during start-up), and ``STOPPING=1`` after SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from gateway.runtime.sdnotify import Notifier, watchdog_interval_s
from tests.peers import ROOT, free_port, gateway_process, stop

WATCHDOG_USEC = 600_000  # pings every 0.3 s


def receive_until(
    sock: socket.socket, done: Callable[[list[dict[str, str]]], bool], timeout_s: float
) -> list[dict[str, str]]:
    """Datagrams as dicts until ``done(messages)`` holds (polling the socket with a deadline)."""
    messages: list[dict[str, str]] = []
    deadline = time.monotonic() + timeout_s
    sock.settimeout(0.2)
    while not done(messages):
        assert time.monotonic() < deadline, f"systemd side got only {messages}"
        try:
            raw = sock.recv(4096)
        except TimeoutError:
            continue
        messages.append(dict(line.split("=", 1) for line in raw.decode().splitlines()))
    return messages


def serve(tmp_path: Path, notify_socket: str, err: IO[bytes]) -> subprocess.Popen[bytes]:
    data, registry = tmp_path / "data", tmp_path / "registry"
    registry.mkdir()
    args = ["--data", str(data), "--upstream", str(registry), "--http", f"127.0.0.1:{free_port()}",
            "--operator", f"127.0.0.1:{free_port()}", "--mqtt", f"127.0.0.1:{free_port()}"]  # fmt: skip
    env = {"NOTIFY_SOCKET": notify_socket, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    return gateway_process(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_ready_watchdog_and_stopping_reach_systemd(tmp_path: Path, kind: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if kind == "path":
        name = str(tmp_path / "notify")
        sock.bind(name)
    else:
        name = f"@ota-gateway-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind(b"\0" + name[1:].encode())
    err = (tmp_path / "stderr").open("wb")
    proc = serve(tmp_path, name, err)
    try:

        def pinged_after_ready(m: list[dict[str, str]]) -> bool:
            at = next((i for i, x in enumerate(m) if x.get("READY") == "1"), None)
            return at is not None and sum("WATCHDOG" in x for x in m[at:]) >= 3

        got = receive_until(sock, pinged_after_ready, 60)
        ready = [m for m in got if m.get("READY") == "1"]
        assert len(ready) == 1, got  # once, when the listeners are up (pings may come before)
        assert ready[0]["MAINPID"] == str(proc.pid)
        assert "not ready: no signed index accepted yet" in ready[0]["STATUS"]
        assert all(m["STATUS"] and ("WATCHDOG" in m or "READY" in m) for m in got)
        proc.send_signal(signal.SIGTERM)
        got = receive_until(sock, lambda m: any("STOPPING" in x for x in m), 30)
        assert proc.wait(20) == 0
    finally:
        stop(proc)
        err.close()
        sock.close()


def test_no_notify_socket_no_datagrams_and_watchdog_rules() -> None:
    quiet = Notifier.from_env({})
    assert not quiet.enabled and quiet.send(READY="1") is False and quiet.watchdog_s is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}, 7) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "x"}, 7) is None
    # a socket nobody listens on: the send fails quietly, the gateway carries on
    lonely = Notifier("/nonexistent/notify", 1.0)
    assert lonely.send(READY="1") is False
    lonely.close()
