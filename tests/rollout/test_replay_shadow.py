"""``gate replay`` with a shadow stage, over seeded traces of unlike devices
(:func:`tests.rollout.site_traces.shadow_trace`): the candidate that swaps two classes on 5 % of
frames is halted in shadow with no device exposed; the good one leaves shadow and rolls out.

Before the replay knew the shadow stage, a shadow poll answer switched the device to the candidate
(every shadow device counted as exposed) and its shadow records were never delivered."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path

from gateway.core.settings import GateSettings
from gateway.rollout.replay import replay_trace
from tests.rollout.site_traces import shadow_trace

SETTINGS = GateSettings(shadow=True)
SEEDS = range(700, 712)  # 12 seeds the stories were not written on


def test_a_swap_is_halted_in_shadow_with_nobody_exposed() -> None:
    times = []
    for seed in SEEDS:
        lines = shadow_trace("shadow_swap_5", 20, seed, hours=4.0)
        r = replay_trace(lines, SETTINGS, seed=seed)
        assert r.outcome == "halted", (seed, [d["reason"] for d in r.decisions])
        assert r.exposed == 0  # nobody switched: halted in shadow
        halt = next(d for d in r.decisions if d["action"] == "halt")
        assert halt["stage"] == "halted" and "shadow_agreement" in halt["reason"]
        assert not any(d["action"] == "advance" for d in r.decisions)
        assert r.halted_at_s is not None
        times.append(r.halted_at_s - r.published_at_s)
    print(
        f"\nreplay, swap 5 %: {len(SEEDS)} of {len(SEEDS)} halted in shadow, median {statistics.median(times) / 60:.0f} min after the publish"
    )


def test_a_good_candidate_leaves_shadow_and_rolls_out() -> None:
    for seed in list(SEEDS)[:6]:
        r = replay_trace(shadow_trace("shadow_good", 20, seed, hours=4.0), SETTINGS, seed=seed)
        passed = [
            d for d in r.decisions if d["reason"] == "shadow stage passed: wave 1 switches to the candidate"
        ]
        assert passed and r.outcome != "halted", (seed, [d["reason"] for d in r.decisions])
        verdict = next(v for v in passed[0]["verdicts"] if v["criterion"] == "shadow_agreement")
        assert verdict["result"] == "no_worse" and verdict["candidate"] > 0.97
        assert r.exposed > 0  # after shadow, the waves switch devices as usual


def test_the_cli_replays_a_shadow_trace(tmp_path: Path) -> None:
    trace = tmp_path / "swap.jsonl"
    trace.write_text("".join(json.dumps(x) + "\n" for x in shadow_trace("shadow_swap_5", 8, 5, hours=3.0)))
    config = tmp_path / "gateway.toml"
    config.write_text("[gates]\nshadow = true\n")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "gate", "replay", "--config", str(config), "--json", str(trace)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[0])
    assert out["outcome"] == "halted" and out["exposed"] == 0
