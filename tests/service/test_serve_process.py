"""``ota-gateway serve`` as a real process: first run with no config, and kill -9 in mid-mirror.

The upstream is nginx from Debian serving the registry folder (rate-limited so that a transfer is
still under way when the gateway is killed).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import Registry
from tests.peers import free_port, gateway_process, nginx, stop, wait_port


@contextmanager
def serve(args: list[str], cwd: Path, **env: str) -> Iterator[subprocess.Popen[str]]:
    fast = {"OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.3", "OTA_GATEWAY_MIRROR__RETRY_INITIAL_S": "0.1", **env}
    proc: subprocess.Popen[str] = gateway_process(
        args, env=fast, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )  # type: ignore[assignment]
    try:
        yield proc
    finally:
        stop(proc)
        assert proc.stdout is not None
        proc.stdout.close()


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except urllib.error.URLError:
        return 0, b""  # not listening (yet)


def wait_for(cond: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a condition with a deadline


def ports() -> list[str]:
    return [
        "--http",
        f"127.0.0.1:{free_port()}",
        "--operator",
        f"127.0.0.1:{free_port()}",
        "--mqtt",
        f"127.0.0.1:{free_port()}",
    ]


def read_banner(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    banner = ""
    while "next poll" not in banner:  # the banner's last line
        line = proc.stdout.readline()
        assert line, f"serve exited early: {banner}"
        banner += line
    return banner


def test_first_run_without_config_then_publish(tmp_path: Path) -> None:
    args = ports()
    args[5] = ""  # --mqtt "": the broker is off, and the banner says so
    with serve(args, tmp_path) as proc:
        banner = read_banner(proc)
        assert "data folder:" in banner and str(tmp_path / "data") in banner
        assert (tmp_path / "registry").is_dir()
        assert f"device API and downloads: http://{args[1]}/" in banner
        assert "MQTT broker (metrics):    off" in banner
        assert "polling:                  upstream every 0.3 s (mirror.poll_interval_s)" in banner
        assert "devices told every 5 min" in banner
        assert "0.0.0.0" not in banner and "None" not in banner
        # The banner's own instructions, run as printed by a shell in another folder, with an
        # environment that does not point at this checkout.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        model = os.urandom(300_000)
        (elsewhere / "model.onnx").write_bytes(model)
        hints = banner.split("To publish a model into the local registry folder:\n")[1].splitlines()[:3]
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        for hint in hints:
            done = subprocess.run(hint, shell=True, cwd=elsewhere, env=env, capture_output=True, text=True)
            assert done.returncode == 0, f"{hint}: {done.stderr}"
        url = f"http://{args[1]}/artifacts/my-model/1.0.0/model.onnx"
        wait_for(lambda: fetch(url)[0] == 200, 20, "the published model to be served")
        assert fetch(url)[1] == model


def test_kill_9_mid_mirror_resumes_and_never_serves_a_partial(reg: Registry, tmp_path: Path) -> None:
    model = os.urandom(4_000_000)
    sha = hashlib.sha256(model).hexdigest()
    manifest = reg.publish(model, chunk_size=0)  # no chunk list: nothing is served before the whole file
    data = tmp_path / "data"
    part = data / "partial" / f"{sha}.part"
    with nginx(reg.root, limit_rate="1m") as upstream:
        args = [
            *ports(),
            "--data",
            str(data),
            "--upstream",
            upstream.url,
            "--site",
            "test-site",
            "--trusted-key",
            str(reg.public_key),
        ]
        url = f"http://{args[1]}/{manifest['artifact_url']}"
        with serve(args, tmp_path) as proc:
            wait_port(int(args[1].rsplit(":", 1)[1]))
            wait_for(lambda: part.exists() and part.stat().st_size > 1_000_000, 20, "a partial transfer")
            status, _ = fetch(url)
            assert status == 503  # in effect, not yet verified: never a partial body
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        size_at_kill = part.stat().st_size
        assert not (data / "blobs" / "sha256" / sha).exists()
        with serve(args, tmp_path):
            wait_for(lambda: fetch(url)[0] == 200, 30, "the artifact to be verified after restart")
            assert fetch(url)[1] == model
        ranges = [
            line for line in upstream.access_log() if manifest["artifact_url"] in line and '"bytes=' in line
        ]
        assert ranges, "the restarted gateway did not resume with Range"
        first = int(ranges[0].split('"bytes=')[1].split("-")[0])
        assert 0 < first <= size_at_kill
