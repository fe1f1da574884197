"""``gate replay`` through its CLI: a trace file in, the gate's decisions out, as a person runs it."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _trace(
    errors_x: float, *, devices: int = 10, seed: int = 0, hours: float = 3.0
) -> Iterator[dict[str, Any]]:
    """A small site of alike devices reporting each minute on either version (errors x ``errors_x``
    on the candidate)."""
    rng = random.Random(seed)
    devs = [{"id": f"cam-{i:02d}", "attrs": {"hw": "rev1"}} for i in range(devices)]
    yield {
        "replay": 1,
        "model_id": "detector",
        "baseline": "1.0.0",
        "candidate": "2.0.0",
        "devices": devs,
        "poll_interval_s": 60,
        "start": 1_700_000_000,
        "publish_s": 600,
    }
    for k in range(int(hours * 60)):
        for d in devs:
            for v, x in (("1.0.0", 1.0), ("2.0.0", errors_x)):
                n = 400
                e = sum(rng.random() < 0.01 * x for _ in range(n))
                yield {
                    "t": k * 60 + 1,
                    "device": d["id"],
                    "version": v,
                    "metrics": {
                        "model_version": v,
                        "num_inferences": n,
                        "num_errors": e,
                        "avg_latency_ms": rng.gauss(40, 3),
                        "cpu_percent": rng.gauss(30, 3),
                        "ram_percent": 40.0,
                    },
                }


def _write(path: Path, lines: Iterator[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def _replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "gate", "replay", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_replay_halts_a_bad_candidate_and_finishes_a_good_one(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.jsonl", _trace(1.0))
    bad = _write(tmp_path / "bad.jsonl", _trace(5.0, seed=1))
    r = _replay("--json", str(good), str(bad))
    assert r.returncode == 0, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert [x["trace"] for x in out] == [str(good), str(bad)]
    assert out[1]["outcome"] == "halted" and out[1]["halted_at_s"] > 600
    assert out[1]["exposed"] < 10
    assert out[0]["outcome"] in ("done", "undecided") and out[0]["halted_at_s"] is None
    for x in out:
        assert {"trace", "outcome", "halted_at_s", "exposed", "full_at_s", "decisions"} <= x.keys()
        assert x["decisions"] and x["decisions"][0]["action"] == "open"
    words = _replay(str(bad))
    assert words.returncode == 0 and "halted" in words.stdout and "wave 1" in words.stdout


def test_a_bad_trace_names_its_line_and_the_others_still_replay(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.jsonl", _trace(1.0, hours=0.5))
    lines = list(_trace(1.0, hours=0.2))
    lines[5]["metrics"]["num_errors"] = -3
    bad = _write(tmp_path / "bad.jsonl", iter(lines))
    headless = _write(tmp_path / "headless.jsonl", iter(lines[1:]))
    r = _replay("--json", str(bad), str(headless), str(good))
    assert r.returncode == 1
    assert "bad.jsonl: line 6:" in r.stderr and "num_errors" in r.stderr
    assert "headless.jsonl: line 1:" in r.stderr
    assert [json.loads(x)["trace"] for x in r.stdout.splitlines()] == [str(good)]
    missing = _replay(str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 1 and "nope.jsonl" in missing.stderr and "Traceback" not in missing.stderr
