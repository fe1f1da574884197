"""``ota-gateway demo`` as a newcomer runs it: within the deadline the operator API (what the
dashboard reads) shows the bad candidate halted and every device that ran it back on 1.0.0, the
terminal told the story, and Ctrl-C ends it with exit code 0 and nothing left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.commands.demo import GATES
from gateway.core.waves import first_wave_most
from tests.peers import ROOT, free_port, stop

DEVICES = 8
DEADLINE_S = 90.0  # the promise is two minutes on the embedded default; the demo's own gates are short


def get(operator: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{operator}{path}", timeout=5) as r:
        return json.load(r)


def halted_and_rolled_back(operator: str) -> bool:
    try:
        gates, devices = get(operator, "/gates"), get(operator, "/devices")["devices"]
    except (urllib.error.URLError, OSError, ValueError):
        return False  # not up yet
    gate = next((g for g in gates["gates"] if g["deployment"] == "detector@2.0.0"), None)
    if gate is None or gate["stage"] != "halted":
        return False
    back = [d for d in devices if d.get("last_event") == "rolled_back"]
    on_candidate = [d for d in devices if d.get("model_version") == "2.0.0"]
    return len(back) >= 2 and not on_candidate


def rollout_card(operator: str) -> str:
    gates = get(operator, "/dashboard/state")["gates"]
    return str(next(g["summary"] for g in gates if g["deployment"] == "detector@2.0.0"))


def test_the_demo_halts_a_bad_candidate_and_rolls_it_back_then_stops_on_ctrl_c(tmp_path: Path) -> None:
    operator = f"127.0.0.1:{free_port()}"
    data = tmp_path / "demo"
    cmd = [sys.executable, "-m", "gateway", "demo", "--devices", str(DEVICES), "--data", str(data),
           "--http", f"127.0.0.1:{free_port()}", "--mqtt", f"127.0.0.1:{free_port()}", "--operator", operator]  # fmt: skip
    out = tmp_path / "stdout.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with out.open("w") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        t0 = time.monotonic()
        while not halted_and_rolled_back(operator):
            assert proc.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() - t0 < DEADLINE_S, (
                "no halt and rollback in time:\n" + out.read_text()[-3000:]
            )
            time.sleep(0.2)  # polling the operator API with a deadline
        # The rollout card follows the devices within one dashboard refresh (2 s): it said "2 to
        # roll back" long after they had.
        t1 = time.monotonic()
        while "0 to roll back" not in (card := rollout_card(operator)):
            assert time.monotonic() - t1 < 2.0, card
            time.sleep(0.1)
        assert "back on 1.0.0" in card
        # The hint it printed works as printed, from another folder (it failed: "no gateway runs
        # on ./data"), and numbers the waves from 1.
        hint = out.read_text().split("(or: ", 1)[1].split(")\n", 1)[0]
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        ran = subprocess.run(hint, shell=True, cwd=elsewhere, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, (hint, ran.stderr)
        row = next(line.split() for line in ran.stdout.splitlines() if line.startswith("detector@2.0.0"))
        assert row[2:4] == ["halted", "1"], ran.stdout  # stage, and the first wave is wave 1
        assert row[6] == "0", ran.stdout  # ROLLBACK: none left, as the devices reported
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0, out.read_text()[-3000:]
    finally:
        stop(proc)
    told = out.read_text()
    assert f"dashboard: http://{operator}/" in told
    # the first wave: its count, grown by its errors up to twice that (gates.first_wave_error_level)
    admitted = re.search(r"wave 1: (\d+) device\(s\) admitted", told)
    fewest, most = (
        GATES.min_devices_per_wave,
        first_wave_most(GATES.waves, DEVICES, GATES.min_devices_per_wave),
    )
    assert admitted and fewest <= int(admitted[1]) <= most, told
    # halted on the evidence of some of them: one device's windows can decide (shared/STATS.md),
    # and which devices have reported when the evidence is enough is the devices' timing (.ci/run
    # once halted on one device of four, where this read the evidence's count as the wave's)
    halted = re.search(r"HALTED at wave 1 \((\d+) devices?, ", told)
    assert halted and "rolled back to 1.0.0" in told, told
    assert 1 <= int(halted[1]) <= int(admitted[1]), told
    # the criterion that halted it, in the gate's words, with its evidence
    assert re.search(r"CPU \d+ % \(at least \d+ %\).*: worse", told), told
    assert (data / "gateway" / "gates").is_dir()  # --data keeps it all
