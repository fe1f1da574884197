"""``deploy/install.sh`` into a prefix: install, upgrade in place, uninstall; the installed unit verifies.

One real install from this checkout (a fresh venv; pip uses its cache), then an upgrade from a copy
of the checkout with the next version number (it prints old -> new and keeps the config and the
data), then ``--uninstall`` (keeps config and data) and ``--uninstall --purge``. The installed unit,
its ExecStart pointing into the prefix, is checked with ``systemd-analyze verify``, and the
installed program starts from the installed config: its data lands where the config's
``data_dir`` says (no environment override), and ``python -m gateway.service.healthcheck`` asks it.
Prerequisites are checked before anything is changed: a too-old python3, or one without
venv/ensurepip, stops it with nothing written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.peers import ROOT, free_port, stop, wait_port

INSTALL = ROOT / "deploy" / "install.sh"
pytestmark = pytest.mark.timeout(400)


def install(
    *args: str, script: Path = INSTALL, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(script), *args],
        capture_output=True,
        text=True,
        timeout=360,
        check=False,
        env={**os.environ, **(env or {})},
    )


def next_version_checkout(tmp_path: Path) -> Path:
    """A copy of this checkout whose version is 0.1.0 -> 9.9.9 (the rest unchanged)."""
    copy = tmp_path / "next"
    for name in ("gateway", "firmware_compat", "config", "deploy"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__", "wheels"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    init = copy / "gateway" / "__init__.py"
    init.write_text(init.read_text().replace('__version__ = "0.1.0"', '__version__ = "9.9.9"'))
    project = copy / "pyproject.toml"
    project.write_text(project.read_text().replace('version = "0.1.0"', 'version = "9.9.9"'))
    return copy


@pytest.mark.skipif(
    os.environ.get("DEPLOY_TESTS") != "1",
    reason="a real install into a prefix takes about 90 s: DEPLOY_TESTS=1 runs it (a .ci/run step)",
)
def test_install_upgrade_uninstall_under_a_prefix(tmp_path: Path) -> None:
    box = tmp_path / "box"
    first = install("--prefix", str(box))
    assert first.returncode == 0, first.stderr
    assert "installed ota-gateway 0.1.0" in first.stdout
    venv, etc, data = box / "opt/ota-gateway/venv", box / "etc/ota-gateway", box / "var/lib/ota-gateway"
    unit = box / "etc/systemd/system/ota-gateway.service"
    config = etc / "gateway.toml"
    assert f'data_dir = "{data}"' in config.read_text() and 'access = "token"' in config.read_text()
    text = unit.read_text()
    assert f"ExecStart={venv}/bin/ota-gateway serve" in text and "OTA_GATEWAY_DATA_DIR" not in text
    assert f"Environment=OTA_GATEWAY_CONFIG={config}" in text

    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and done.stderr.strip() == "", done.stderr

    run_installed(venv, config, data, tmp_path)

    # an installer's edit and the data survive an upgrade; the upgrade says old -> new
    config.write_text(config.read_text().replace('site = "default"', 'site = "plant-9"'))
    (data / "marker").write_text("kept")
    second = install("--prefix", str(box), script=next_version_checkout(tmp_path) / "deploy" / "install.sh")
    assert second.returncode == 0, second.stderr
    assert "upgraded ota-gateway 0.1.0 -> 9.9.9 in place" in second.stdout, second.stdout
    assert "keeping the existing" in second.stdout
    assert 'site = "plant-9"' in config.read_text() and (data / "marker").read_text() == "kept"
    version = subprocess.run([str(venv / "bin/ota-gateway"), "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == "ota-gateway 9.9.9"

    gone = install("--prefix", str(box), "--uninstall")
    assert gone.returncode == 0, gone.stderr
    assert not (box / "opt/ota-gateway").exists() and not unit.exists()
    assert config.exists() and (data / "marker").exists() and "--purge" in gone.stdout
    purged = install("--prefix", str(box), "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not etc.exists() and not data.exists()


def run_installed(venv: Path, config: Path, data: Path, tmp_path: Path) -> None:
    """The installed program on the installed config (ports moved to free ones): data in data_dir."""
    http, op = free_port(), free_port()
    env = {
        **os.environ,
        "OTA_GATEWAY_CONFIG": str(config),
        "OTA_GATEWAY_HTTP__LISTEN": f"127.0.0.1:{http}",
        "OTA_GATEWAY_OPERATOR__LISTEN": f"127.0.0.1:{op}",
        "OTA_GATEWAY_MQTT__LISTEN": f"127.0.0.1:{free_port()}",
        "OTA_GATEWAY_DISCOVERY__ENABLED": "false",
        "OTA_GATEWAY_MIRROR__UPSTREAM": str(tmp_path / "registry"),
    }
    (tmp_path / "registry").mkdir()
    env.pop("PYTHONPATH", None)
    proc = subprocess.Popen(
        [str(venv / "bin/ota-gateway"), "serve"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port(op, 60)
        assert (data / ".lock").exists() and (data / "outbox.sqlite").exists()  # the config's data_dir
        deadline = time.monotonic() + 20
        while True:  # polling the health check with a deadline
            check = subprocess.run(
                [str(venv / "bin/python"), "-m", "gateway.service.healthcheck"],
                env=env,
                capture_output=True,
                text=True,
            )
            if "no signed index accepted yet" in check.stderr or time.monotonic() > deadline:
                break
        assert check.returncode == 1 and "not ready: no signed index accepted yet" in check.stderr, check
    finally:
        stop(proc)
        assert proc.stderr is not None
        proc.stderr.close()


def fake_python(tmp_path: Path, body: str) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(f"#!/bin/sh\n{body}\n")
    fake.chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("exit 1", "python3 >= 3.11 is required"),
        (
            f'case "$*" in *ensurepip*) exit 1;; *) exec {sys.executable} "$@";; esac',
            "apt-get install python3-venv",
        ),
    ],
)
def test_prerequisites_are_checked_before_anything_changes(tmp_path: Path, body: str, says: str) -> None:
    box = tmp_path / "box"
    done = install("--prefix", str(box), env=fake_python(tmp_path, body))
    assert done.returncode == 1 and says in done.stderr, done.stderr
    assert not box.exists()


def test_bad_options_are_refused() -> None:
    assert install("--purge").returncode == 1
    assert "unknown option" in install("--frobnicate").stderr
    assert "absolute" in install("--prefix", "relative/dir").stderr
