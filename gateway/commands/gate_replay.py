"""``ota-gateway gate replay [--config FILE] [--json] TRACE.jsonl...``: the site's real gate decisions
over recorded or simulated sites (:mod:`gateway.rollout.replay`), so an installer can try a config
change on last week's data before making it. With ``--json``, one line per trace, in order."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.commands.serve import load_settings
from gateway.core import jsondoc
from gateway.core.errors import FormatError
from gateway.rollout.replay import ReplayResult, replay_trace


def _lines(path: Path) -> Iterator[Any]:
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if raw.strip():
                try:
                    yield jsondoc.loads(raw)
                except FormatError as exc:
                    raise FormatError(f"line {n}: {exc}") from None


def _account(r: ReplayResult) -> str:
    """The replay in words, for people."""
    out = [f"{r.trace}: {r.outcome}"]
    if r.halted_at_s is not None:
        out[0] += f" {r.halted_at_s - r.published_at_s:.0f} s after publish"
    if r.full_at_s is not None:
        out[0] += f"; every device admitted {r.full_at_s - r.published_at_s:.0f} s after publish"
    out[0] += f"; {r.exposed} device(s) ran the candidate"
    for d in r.decisions:
        out.append(
            f"  +{d['t'] - r.published_at_s:8.0f} s  wave {d['wave'] + 1}  {d['action']}: {d['reason']}"
        )
    return "\n".join(out)


def cmd_replay(args: argparse.Namespace) -> int:
    s = load_settings(args)
    failed = 0
    for name in args.traces:
        path = Path(name)
        try:
            r = replay_trace(
                _lines(path),
                s.gates,
                name=name,
                window_s=s.telemetry.window_s,
                cohort_attribute=s.telemetry.cohort_attribute,
                tick_s=s.gate_step_s,
            )
        except (OSError, FormatError) as exc:
            print(f"ota-gateway: gate replay: {name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(json.dumps(r.to_json(), separators=(",", ":")) if args.json else _account(r), flush=True)
    return 1 if failed else 0


def register(gs: Any) -> None:
    p = gs.add_parser("replay", help="run the gate decisions over recorded or simulated sites")
    p.add_argument("--config", help="TOML config file whose [gates] to replay with")
    p.add_argument("--json", action="store_true", help="one JSON line per trace")
    p.add_argument("traces", nargs="+", metavar="TRACE.jsonl")
    p.set_defaults(func=cmd_replay)
