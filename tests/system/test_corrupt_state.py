"""Corrupt files: each state file in turn, truncated, garbage or of the wrong schema, under a real
``ota-gateway serve`` process (issue 11, "What it must show").

A seed run leaves a data folder with every state file written (a mirrored, verified artifact, a
device that polled, gate state, trust state, an outbox with records). Each case copies it, damages
one file while the gateway is stopped, starts the real process, and checks from the outside: it
starts (``/healthz`` and a poll answer), the file was moved aside as ``<name>.corrupt-<time>``,
``/status`` lists the recovery, stderr has exactly one line about it, and the verified artifact is
served with its signed bytes. The cases run in parallel processes to keep the test short.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway import registry
from tests.peers import ROOT, free_port, gateway_process, stop

FILES = (
    "catalog.json",
    "inventory.json",
    "gates/gates.json",
    "gates/gates-meta.json",
    "trust/state.json",
    "outbox.sqlite",
)
MODES = ("truncated", "garbage", "wrong-schema")
DEVICE = "cam-1"
POLL = f"/devices/{DEVICE}/updates?fw=1.0.0&hw=rev2&model_id=detector&model_version=0.9.0"

# Valid JSON (or SQLite) of the wrong shape, per file: the shapes that crashed the gateway before.
WRONG_SCHEMA: dict[str, Any] = {
    "catalog.json": {"entries": {"detector": 1}, "history": [], "last_access": "x"},
    "inventory.json": {"devices": {"cam-1": "rev2"}},
    "gates/gates.json": {"gates": {"detector@1.0.0": {"stage": "waves", "wave": "one"}}},
    "gates/gates-meta.json": {"known": [1, 2], "ungated": "all"},
    "trust/state.json": {"highest_version": "7", "highest_issued": "next year"},
}


@dataclass
class Gw:
    proc: subprocess.Popen[bytes]
    http: str
    operator: str
    log: Path


def reason(url: str) -> tuple[int, str | None]:
    """A poll's status and its ``X-OTA-Reason`` (why there is nothing for the device now)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status), r.headers.get("X-OTA-Reason")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-OTA-Reason")


def fetch(url: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return int(r.status), bytes(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str, gw: Gw | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = cond()
        if got:
            return got
        if gw is not None and gw.proc.poll() is not None:
            raise AssertionError(f"the gateway exited ({gw.proc.returncode}): {gw.log.read_text()[-2000:]}")
        if time.monotonic() > deadline:
            log = gw.log.read_text()[-2000:] if gw else ""
            raise AssertionError(f"timed out waiting for {what}\n{log}")
        time.sleep(0.05)  # polling a condition with a deadline


@contextmanager
def gateway(data: Path, upstream: Path, key: Path, log: Path) -> Iterator[Gw]:
    http, operator = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    args = ["--data", str(data), "--upstream", str(upstream), "--site", "test-site", "--trusted-key", str(key),
            "--http", http, "--operator", operator, "--mqtt", f"127.0.0.1:{free_port()}"]  # fmt: skip
    env = {"OTA_GATEWAY_MIRROR__POLL_INTERVAL_S": "0.5", "OTA_GATEWAY_MIRROR__RETRY_INITIAL_S": "0.1"}
    with log.open("wb") as out:
        proc = gateway_process(args, env=env, stdout=out, stderr=subprocess.STDOUT)
    gw = Gw(proc, http, operator, log)
    try:
        yield gw
    finally:
        stop(proc)


def status(gw: Gw) -> dict[str, Any]:
    code, body = fetch(f"http://{gw.operator}/status")
    assert code == 200, body
    return dict(json.loads(body))


@dataclass
class Seed:
    data: Path
    upstream: Path
    key: Path
    model: bytes
    url: str


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Seed:
    root = tmp_path_factory.mktemp("seed")
    registry.keygen(root / "keys", "ecdsa-p256")
    (root / "registry").mkdir()
    model = os.urandom(200_000)
    (root / "model.onnx").write_bytes(model)
    manifest = registry.publish(
        root / "registry", root / "model.onnx", root / "keys" / "private.pem",
        model_id="detector", version="1.0.0", site="test-site",
    )  # fmt: skip
    s = Seed(root / "data", root / "registry", root / "keys" / "public.pem", model, manifest["artifact_url"])
    with gateway(s.data, s.upstream, s.key, root / "seed.log") as gw:
        wait_for(lambda: fetch(f"http://{gw.http}/{s.url}")[0] == 200, 30, "the artifact", gw)
        wait_for(lambda: fetch(f"http://{gw.http}{POLL}")[0] in (200, 204), 10, "a poll answer", gw)
        wait_for(lambda: status(gw)["gates"], 10, "the gate to open", gw)
    for name in FILES:
        assert (s.data / name).is_file(), f"the seed run did not write {name}"
    return s


def corrupt(data: Path, name: str, mode: str) -> None:
    path = data / name
    raw = path.read_bytes()
    if mode == "truncated":
        path.write_bytes(raw[: max(1, len(raw) // 2 - 7)])
    elif mode == "garbage":
        keep = 100 if path.suffix == ".sqlite" else 0  # SQLite: the header stays, the pages are garbage
        path.write_bytes(raw[:keep] + os.urandom(max(64, len(raw) - keep)))
    elif path.suffix == ".sqlite":
        path.unlink()
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE records (id INTEGER PRIMARY KEY, payload BLOB)")
        db.commit()
        db.close()
    else:
        path.write_text(json.dumps(WRONG_SCHEMA[name]))


def run_case(s: Seed, base: Path, name: str, mode: str) -> str | None:
    """One start of the real process on a data folder with ``name`` damaged; None when all holds."""
    data = base / "data"
    shutil.copytree(s.data, data)
    target = data / name
    corrupt(data, name, mode)
    with gateway(data, s.upstream, s.key, base / "gw.log") as gw:
        wait_for(lambda: fetch(f"http://{gw.http}/healthz")[0] == 200, 30, "/healthz", gw)
        code, _ = fetch(f"http://{gw.http}{POLL}")
        assert code in (200, 204), f"poll answered {code}"
        code, body = wait_for(
            lambda: (r := fetch(f"http://{gw.http}/{s.url}"))[0] == 200 and r, 30, "the artifact", gw
        )
        assert hashlib.sha256(body).digest() == hashlib.sha256(s.model).digest()
        st = status(gw)
        found = [r for r in st["recovered"] if r["file"] == str(target)]
        assert len(found) == 1, f"status recovered: {st['recovered']}"
        assert found[0]["moved_to"] and Path(found[0]["moved_to"]).is_file()
        assert Path(found[0]["moved_to"]).name.startswith(target.name + ".corrupt-")
        if name.startswith("gates/"):
            assert st["safe_mode"], "gate state lost but not in safe mode"
        if name == "trust/state.json":
            assert st["clock"]["trusted"] and st["clock"]["floor_source"]["kind"] == "index"  # rebuilt
    lines = [line for line in gw.log.read_text().splitlines() if str(target) in line]
    assert len(lines) == 1, f"expected one log line about {target}, got: {lines}"
    assert "Traceback" not in gw.log.read_text()
    return None


CASES = [(name, mode) for name in FILES for mode in MODES]


@pytest.fixture(scope="module")
def outcomes(seed: Seed, tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], str | None]:
    """Every case started at once (bounded), each in its own folder and process."""
    base = tmp_path_factory.mktemp("cases")

    def one(case: tuple[str, str]) -> str | None:
        folder = base / f"{case[0].replace('/', '_')}-{case[1]}"
        folder.mkdir()
        try:
            return run_case(seed, folder, *case)
        except Exception as exc:  # reported by that case's test, not as an error of all of them
            return f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=6) as pool:
        return dict(zip(CASES, pool.map(one, CASES), strict=True))


@pytest.mark.parametrize(("name", "mode"), CASES)
def test_gateway_starts_with_a_damaged_state_file(
    name: str, mode: str, outcomes: dict[tuple[str, str], str | None]
) -> None:
    failure = outcomes[(name, mode)]
    assert failure is None, failure


def test_gate_state_lost_holds_every_candidate_until_released(seed: Seed, tmp_path: Path) -> None:
    """After a corrupt gates.json and a restart: a polling device waits (204 waiting_for_wave) until
    an operator releases the gate with ``ota-gateway gate release``; then wave 0 is admitted."""
    data = tmp_path / "data"
    shutil.copytree(seed.data, data)
    (data / "gates" / "gates.json").write_text(json.dumps(WRONG_SCHEMA["gates/gates.json"]))
    with gateway(data, seed.upstream, seed.key, tmp_path / "gw.log") as gw:
        wait_for(lambda: fetch(f"http://{gw.http}/healthz")[0] == 200, 30, "/healthz", gw)
        assert reason(f"http://{gw.http}{POLL}") == (204, "waiting_for_wave")
        st = status(gw)
        (gate,) = st["gates"]
        assert gate["held_by"] == "safe-mode" and gate["admitted"] == 0 and st["safe_mode"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OTA_GATEWAY_OPERATOR__LISTEN": gw.operator}
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "gate", "release", gate["deployment"], "--why", "checked the files",
             "--data", str(data)],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        shown = subprocess.run(
            [sys.executable, "-m", "gateway", "status", "--json", "--data", str(data)],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        (rec,) = json.loads(shown.stdout)["recovered"]  # ``ota-gateway status`` shows it too
        assert rec["file"] == str(data / "gates" / "gates.json") and "safe mode" in rec["action"]
        wait_for(lambda: fetch(f"http://{gw.http}{POLL}")[0] == 200, 20, "wave 0 to admit the device", gw)
        (gate,) = status(gw)["gates"]
        assert gate["held_by"] is None and gate["admitted"] >= 1 and gate["wave"] == 0
