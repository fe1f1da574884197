"""Client commands find the right gateway, through the CLI for real: ``ota-gateway`` processes
against gateway processes on free ports.

Two gateways run side by side on their own data folders (as on a box with a test instance). A
client names one with ``--operator`` or finds it from ``--data``; it never shows the other one,
even where the configuration points at the other's port; a stale record (gateway killed) and a
mismatch are said in one line with exit code 1. Output for people has no Python reprs; a closed
pipe ends the command quietly.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.runtime import instance
from tests.peers import ROOT, free_port, gateway_process, stop, wait_port


@dataclass
class Gw:
    proc: subprocess.Popen[bytes]
    data: Path
    site: str
    operator: str


def start(tmp: Path, name: str, site: str) -> Gw:
    registry = tmp / f"{name}-registry"
    registry.mkdir()
    data = tmp / f"{name}-data"
    operator = f"127.0.0.1:{free_port()}"
    args = ["--data", str(data), "--site", site, "--upstream", str(registry), "--http", f"127.0.0.1:{free_port()}",
            "--operator", operator, "--mqtt", f"127.0.0.1:{free_port()}"]  # fmt: skip
    proc = gateway_process(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gw = Gw(proc, data, site, operator)
    try:
        wait_port(int(operator.rsplit(":", 1)[1]), 20)
        deadline = time.monotonic() + 20
        while instance.read_record(data) is None:  # written once it listens everywhere
            assert time.monotonic() < deadline, "no gateway.json"
            time.sleep(0.02)  # polling a condition with a deadline
    except BaseException:
        stop(proc)
        raise
    return gw


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gw, Gw]]:
    tmp = tmp_path_factory.mktemp("two")
    a = start(tmp, "a", "site-a")
    try:
        b = start(tmp, "b", "site-b")
    except BaseException:
        stop(a.proc)
        raise
    try:
        yield a, b
    finally:
        stop(a.proc)
        stop(b.proc)


def env(**extra: str) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("OTA_GATEWAY_")}
    return {**out, "PYTHONPATH": str(ROOT), **extra}


def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], env=env(**extra), capture_output=True, text=True, timeout=60
    )


def shell(command: str) -> subprocess.CompletedProcess[str]:
    exe = f"{sys.executable} -m gateway"
    return subprocess.run(
        command.replace("ota-gateway", exe), shell=True, env=env(), capture_output=True, text=True, timeout=60
    )


def test_status_operator_reaches_the_gateway_named(two: tuple[Gw, Gw]) -> None:
    a, b = two
    for gw in (a, b):
        done = cli("status", "--operator", gw.operator, "--json")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["gateway"]["site"] == gw.site
        assert doc["gateway"]["data_dir"] == str(gw.data)
        assert doc["gateway"]["data_id"] == instance.read_data_id(gw.data)


def test_status_data_finds_its_own_gateway_not_the_configured_port(two: tuple[Gw, Gw]) -> None:
    a, b = two
    # The configuration names b's operator port (as the default 8081 did in the report): --data a
    # must still reach a, found by the record in a's data folder.
    done = cli("status", "--data", str(a.data), "--json", OTA_GATEWAY_OPERATOR__LISTEN=b.operator)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["gateway"]["site"] == "site-a"
    for args in (("devices", "--json"), ("gate", "status", "--json")):
        done = cli(*args, "--data", str(b.data), OTA_GATEWAY_OPERATOR__LISTEN=a.operator)
        assert done.returncode == 0, done.stderr
    done = cli("devices", "--operator", a.operator, "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == {"devices": []}


def test_the_wrong_gateway_is_refused_in_one_line(two: tuple[Gw, Gw]) -> None:
    a, b = two
    for args in (
        ("status", "--operator", b.operator, "--data", str(a.data)),
        ("status", "--operator", a.operator, "--site", "site-b"),
        ("gate", "hold", "m@1", "--why", "test", "--operator", b.operator, "--data", str(a.data)),
    ):
        done = cli(*args)
        assert done.returncode == 1, done
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1, done.stderr
        assert "is another one" in done.stderr and "nothing was done" in done.stderr
    done = cli("status", "--operator", b.operator, "--data", str(a.data))
    assert str(b.data) in done.stderr and instance.read_data_id(a.data) in done.stderr


def test_a_stale_record_is_named(tmp_path: Path) -> None:
    gw = start(tmp_path, "gone", "site-gone")
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait()
    assert instance.read_record(gw.data) is not None  # a crash leaves it behind
    done = cli("status", "--data", str(gw.data))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"pid {gw.proc.pid}" in done.stderr and "is gone" in done.stderr
    done = cli("status", "--data", str(tmp_path / "never-ran"))
    assert done.returncode == 1 and "no gateway runs on" in done.stderr


def test_a_clean_stop_removes_the_record(tmp_path: Path) -> None:
    gw = start(tmp_path, "clean", "site-clean")
    stop(gw.proc)
    assert gw.proc.returncode == 0
    assert instance.read_record(gw.data) is None
    assert instance.read_data_id(gw.data)  # the folder's identity stays


def test_human_status_has_no_python_values_or_epoch_floats(two: tuple[Gw, Gw]) -> None:
    a, _ = two
    done = cli("status", "--data", str(a.data))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for section in ("Gateway for site 'site-a'", "Upstream", "Deployments", "Canary gates", "This box"):
        assert section in out
    assert "None" not in out and "True" not in out and "False" not in out
    assert not re.search(r"\b1\d{9}(\.\d+)?\b", out), out  # no Unix times
    assert not re.search(r"\b\d{7,}\b", out), out  # no raw byte counts
    assert re.search(r"\d+(\.\d)? [kMG]B", out)
    assert " ago" in out or "just now" in out


@pytest.mark.parametrize("command", ["status", "gate status --json"])
def test_a_closed_pipe_ends_quietly(two: tuple[Gw, Gw], command: str) -> None:
    a, _ = two
    done = shell(f"ota-gateway {command} --data {a.data} | head -1")
    assert done.returncode == 0
    assert done.stderr == ""
    assert done.stdout.count("\n") == 1
    # A reader that is gone before the first write, every time (what head does to a long output).
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gateway", *command.split(), "--data", str(a.data)],
            env=env(),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert proc.stderr == ""
    assert proc.returncode == 1
