"""What ``serve`` logs, read from a real process's stderr: a normal start says no WARNING (the
descriptor limit is an INFO line unless it binds), ``gateway.json`` is written as soon as the
operator API listens (before the broker and mDNS start), and a first publish is followed in words
from the accepted index through the transfer to "ready"."""

from __future__ import annotations

import os
import resource
import subprocess
import time
from pathlib import Path

from tests.conftest import Registry
from tests.peers import ROOT, free_port, gateway_process, stop


def lines_until(path: Path, text: str, timeout_s: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        lines = path.read_text().splitlines()
        if any(text in line for line in lines):
            return lines
        assert time.monotonic() < deadline, f"no {text!r} in:\n" + "\n".join(lines[-30:])
        time.sleep(0.05)  # polling the log with a deadline


def first(lines: list[str], text: str) -> int:
    return next(i for i, line in enumerate(lines) if text in line)


def test_a_normal_start_warns_of_nothing_and_a_first_publish_is_told_through_to_ready(
    reg: Registry, tmp_path: Path
) -> None:
    def few_descriptors() -> None:  # a box whose hard limit is below what the caps could use
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))

    args = ["--data", str(tmp_path / "data"), "--upstream", str(reg.root), "--trusted-key", str(reg.public_key),
            "--site", reg.site or "test-site",
            "--http", f"127.0.0.1:{free_port()}", "--operator", f"127.0.0.1:{free_port()}",
            "--mqtt", f"127.0.0.1:{free_port()}"]  # fmt: skip
    env = {"OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.5"}
    err = tmp_path / "stderr"
    with err.open("wb") as sink:
        proc = gateway_process(
            args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=sink, preexec_fn=few_descriptors
        )
    try:
        lines = lines_until(err, "not ready yet: no signed index accepted yet")
        assert not [line for line in lines if " WARNING " in line or " ERROR " in line], lines
        assert any("INFO" in line and "file descriptor limit 4096" in line for line in lines), lines
        written = first(lines, "gateway.json written")
        assert written < first(lines, "mqtt: listening"), lines  # clients find it before the broker is up
        reg.publish(os.urandom(300_000), version="1.0.0")
        lines = lines_until(err, "ready: index version 1 in effect")
        steps = ["accepted site index version 1", "mirroring detector@1.0.0 (300.0 kB)",
                 "mirrored and verified detector@1.0.0 (300.0 kB", "ready: index version 1 in effect"]  # fmt: skip
        at = [first(lines, step) for step in steps]
        assert at == sorted(at), lines
    finally:
        stop(proc)
