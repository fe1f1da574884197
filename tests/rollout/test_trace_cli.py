"""``ota-gateway gate trace`` through its CLI, with no gateway running: the data folder's trace
(written by the gateway's own :class:`TraceLog`), inventory and gate files in; a replay trace out
that ``gate replay`` takes; bad input answered with one line and exit code 1."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.core.aggregate import Aggregator
from gateway.core.metrics import parse_metrics
from gateway.runtime.stats import Stats
from gateway.telemetry.trace_log import TraceLog
from tests.peers import ROOT

DEVICES = [f"cam-{i}" for i in range(6)]


async def _record(data: Path, versions: dict[str, list[str]], *, minutes: int = 30, seed: int = 0) -> float:
    """``minutes`` of one-minute windows ending a minute ago: each model's devices on the first of
    its versions, then (from the middle) half of them on each later one in turn."""
    rng, now = random.Random(seed), [time.time() - 60 * (minutes + 1)]
    log = TraceLog(data / "traces", max_bytes=1 << 30, keep_s=86400.0, stats=Stats(), clock=lambda: now[0])
    start = now[0] - now[0] % 60
    first_new: float = 0.0
    for k in range(minutes):
        at = start + 60 * k
        agg = Aggregator(60.0)
        for model, vs in versions.items():
            for i, dev in enumerate(DEVICES):
                step = max(0, k - minutes // 2 + 1) if i % 2 else 0
                version = vs[min(step, len(vs) - 1)]
                msg = {"model_id": model, "model_version": version, "num_inferences": 300,
                       "num_errors": rng.randint(0, 3), "cpu_percent": rng.gauss(30, 2), "ram_percent": 40.0}  # fmt: skip
                agg.add(parse_metrics(f"{model}-{dev}", msg, at + rng.uniform(0, 59)), {"hw": "rev2"})
                if step == 1 and not first_new:
                    first_new = at + 30
        now[0] = at + 61
        log.on_windows(agg.close_due(now[0]))
        await log.flush()
    return first_new


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "gateway", "gate", *args], capture_output=True, text=True, timeout=60, env=env
    )


def _trace(data: Path, out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _cli("trace", "--data", str(data), "--since", "2h", *args, str(out))


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


async def test_the_two_newest_versions_by_number_with_attrs_and_manifest(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first_new = await _record(data, {"detector": ["1.9.0", "1.10.0"]})
    (data / "inventory.json").write_text(
        json.dumps(
            {
                "devices": [
                    {"device_id": f"detector-{d}", "attrs": {"hw": "rev2", "line": "a"}} for d in DEVICES
                ]
            }
        )
    )
    (data / "gates").mkdir()
    manifest = {"model_id": "detector", "version": "1.10.0", "health_checks": {"max_cpu_percent": 80},
                "target_cohort": "hw:rev2", "artifact_url": "x", "sha256": "0" * 64}  # fmt: skip
    (data / "gates" / "gates-meta.json").write_text(json.dumps({"known": {"detector@1.10.0": manifest}}))
    site = tmp_path / "site.json"
    site.write_text(json.dumps({"devices": {"detector-cam-0": {"line": "b"}}}))
    config = tmp_path / "gateway.toml"
    config.write_text(f'data_dir = "{data}"\n[devices]\ninventory_file = "{site}"\npoll_interval_s = 90.0\n')
    out = tmp_path / "out.jsonl"
    r = _cli("trace", "--config", str(config), "--since", "2h", str(out))
    assert r.returncode == 0, r.stderr
    head, *records = _lines(out)
    assert f"wrote {out}: {len(records)} records of 6 devices, detector 1.9.0 -> 1.10.0" in r.stdout
    assert (head["baseline"], head["candidate"], head["poll_interval_s"]) == ("1.9.0", "1.10.0", 90.0)
    attrs = {d["id"]: d["attrs"] for d in head["devices"]}
    assert attrs["detector-cam-0"] == {"hw": "rev2", "line": "b"} and attrs["detector-cam-1"]["line"] == "a"
    assert head["manifest"] == {"health_checks": {"max_cpu_percent": 80}, "target_cohort": "hw:rev2"}
    # a poll before the window of the candidate's first record: replayed devices switch in time for it
    assert head["publish_s"] == pytest.approx(first_new - 60 / 2 - 90.0 - head["start"], abs=1e-3)
    assert len(records) == 30 * 6 and [x["t"] for x in records] == sorted(x["t"] for x in records)
    assert {x["version"] for x in records} == {"1.9.0", "1.10.0"}
    replayed = _cli("replay", "--json", str(out))
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["decisions"][0]["action"] in ("open", "wait_reference")


async def test_a_named_model_and_versions_among_several(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _record(data, {"detector": ["1.0.0", "2.0.0", "3.0.0"], "counter": ["0.1", "0.2"]})
    out = tmp_path / "out.jsonl"
    ambiguous = _trace(data, out)
    assert ambiguous.returncode == 1 and "2 models" in ambiguous.stderr and "--model" in ambiguous.stderr
    r = _trace(data, out, "--model", "detector", "--baseline", "1.0.0", "--candidate", "2.0.0")
    assert r.returncode == 0, r.stderr
    head, *records = _lines(out)
    assert (head["model_id"], head["baseline"], head["candidate"]) == ("detector", "1.0.0", "2.0.0")
    assert {x["version"] for x in records} == {"1.0.0", "2.0.0"}
    newest = _trace(data, out, "--model", "counter")
    assert newest.returncode == 0 and "counter 0.1 -> 0.2" in newest.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--since", "a week"], "--since: 'a week' is not a duration"),
        (["--since", "0"], "--since: '0' is not a duration above 0"),
        (["--since", "2h", "--poll-interval", "soon"], "--poll-interval: 'soon' is not a duration"),
        (["--since", "2h"], "no metrics or events are recorded"),
        (["--since", "2h", "--baseline", "1.0.0"], "--baseline and --candidate go together"),
        (["--since", "2h", "--model", "detector"], "only detector@1.0.0 is recorded"),
        (["--since", "2h", "--baseline", "1.0.0", "--candidate", "9.9.9"], "nothing of detector@9.9.9"),
    ],
)
async def test_bad_input_gets_one_line_and_exit_1(tmp_path: Path, args: list[str], says: str) -> None:
    data = tmp_path / "data"
    if "no metrics" not in says:
        await _record(data, {"detector": ["1.0.0"]}, minutes=3)
    r = _cli("trace", "--data", str(data), *args, str(tmp_path / "out.jsonl"))
    assert r.returncode == 1 and says in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "out.jsonl").exists()


async def test_an_output_that_cannot_be_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await _record(data, {"detector": ["1.0.0", "2.0.0"]}, minutes=4)
    r = _trace(data, tmp_path / "no-such-folder" / "out.jsonl")
    assert r.returncode == 1 and "cannot write" in r.stderr and "Traceback" not in r.stderr
