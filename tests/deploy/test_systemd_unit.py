"""The systemd unit: a configuration error is not a restart loop (issue 11, "State files"); it is
Type=notify with a watchdog, after time-sync.target, and the config decides the data folder (issue 13).

``Restart=always`` restarts the gateway after any fault it could recover from by itself; a typo in
the config file is not one, so the unit names the configuration exit code in
``RestartPreventExitStatus=``. Checked against the real ``serve`` process's exit code, and the unit
with ``systemd-analyze verify`` where systemd is installed (skipped, saying so, where it is not).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.peers import ROOT

UNIT = ROOT / "deploy" / "ota-gateway.service"


def unit_values(key: str) -> list[str]:
    return [
        line.split("=", 1)[1].strip()
        for line in UNIT.read_text().splitlines()
        if line.strip().startswith(key + "=")
    ]


def test_a_config_typo_exits_with_the_code_the_unit_does_not_restart(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('site = "plant-7"\nhttp = 5\n')  # a typo: http must be a table
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--data", str(tmp_path / "data")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "http" in done.stderr
    assert unit_values("Restart") == ["always"]
    prevented = " ".join(unit_values("RestartPreventExitStatus")).split()
    assert str(done.returncode) in prevented


def test_the_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # The unit names the installed program; point it at one that exists here, change nothing else.
    text = UNIT.read_text().replace("/opt/ota-gateway/venv/bin/ota-gateway", "/bin/true")
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # a value systemd cannot parse is only a warning


def test_the_unit_waits_for_the_clock_notifies_and_leaves_the_data_folder_to_the_config() -> None:
    """Type=notify with a watchdog (the gateway sends READY=1 and WATCHDOG=1: tests/runtime/test_sdnotify.py),
    ordered after time-sync.target, and no environment that would beat the config's data_dir."""
    assert unit_values("Type") == ["notify"]
    assert int(unit_values("WatchdogSec")[0]) >= 10
    assert "time-sync.target" in " ".join(unit_values("After")).split()
    assert "time-sync.target" in " ".join(unit_values("Wants")).split()
    environment = " ".join(unit_values("Environment"))
    assert "OTA_GATEWAY_CONFIG=" in environment
    assert "DATA_DIR" not in environment and "--data" not in " ".join(unit_values("ExecStart"))
