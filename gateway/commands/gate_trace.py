"""``ota-gateway gate trace --since DURATION [--model M] [--baseline V1 --candidate V2] OUT.jsonl``:
this site's own recorded metrics (``<data>/traces/``, :mod:`gateway.telemetry.trace_log`) written as
a replay trace (:mod:`gateway.rollout.trace`), so an installer can try a config change on last
week's data (``ota-gateway gate replay --config NEW.toml OUT.jsonl``) before making it.

It reads the data folder directly, so it works with the gateway stopped: the devices' attributes
come from the gateway's inventory (``inventory.json``) and the site inventory file, the candidate's
manifest fields from the gate files. Without ``--baseline``/``--candidate`` it takes the model's two
newest versions; the candidate's index is taken to land at its first record (``publish_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gateway.commands.serve import load_settings
from gateway.core import human
from gateway.core.errors import GatewayError
from gateway.core.settings import Settings
from gateway.inventory.store import clean_attrs, load_inventory_file
from gateway.rollout.gate_store import GateStore
from gateway.rollout.trace import Choice, Survey
from gateway.runtime import atomic
from gateway.telemetry.trace_log import read_hours


def _fail(message: str) -> int:
    print(f"ota-gateway: gate trace: {message}", file=sys.stderr)
    return 1


def _records(folder: Path, since: float, until: float) -> Iterator[Mapping[str, Any]]:
    for hour in read_hours(folder, since):
        for rec in hour:
            if rec["t"] <= until:
                yield rec


def _attrs(s: Settings) -> dict[str, dict[str, str]]:
    """Each device's attributes as the gateway last knew them, the site inventory file's on top."""
    out: dict[str, dict[str, str]] = {}
    try:
        doc = atomic.read_json(s.data_path / "inventory.json", {})
    except GatewayError:
        doc = {}  # damaged: the gateway moves it aside at its next start; the file's entries remain
    for item in doc.get("devices", []) if isinstance(doc, dict) else []:
        if isinstance(item, dict) and isinstance(item.get("device_id"), str):
            attrs = item.get("attrs")
            out[item["device_id"]] = clean_attrs(attrs) if isinstance(attrs, dict) else {}
    if s.devices.inventory_file:
        for device, attrs in load_inventory_file(Path(s.devices.inventory_file)).items():
            out[device] = {**out.get(device, {}), **attrs}
    return out


def _manifest(s: Settings, choice: Choice) -> Mapping[str, Any]:
    """The candidate's manifest as the gate keeper last held it ({} when it cannot be read)."""
    try:
        known = GateStore(s.data_path / "gates").load_meta().get("known", {})
    except GatewayError:
        return {}
    raw = known.get(f"{choice.model_id}@{choice.candidate}")
    return raw if isinstance(raw, Mapping) else {}


def cmd_trace(args: argparse.Namespace) -> int:
    try:
        span = human.parse_duration(args.since)
    except ValueError as exc:
        return _fail(f"--since: {exc}")
    try:
        poll = human.parse_duration(args.poll_interval) if args.poll_interval else None
    except ValueError as exc:
        return _fail(f"--poll-interval: {exc}")
    s = load_settings(args)
    folder = s.data_path / "traces"
    until = time.time()
    since = until - span
    survey = Survey()
    for rec in _records(folder, since, until):
        survey.add(rec)
    try:
        choice = survey.choose(args.model, args.baseline, args.candidate)
    except ValueError as exc:
        return _fail(f"{folder}, the last {human.duration(span)}: {exc}")
    poll_s = poll or s.devices.poll_interval_s
    header = choice.header(_attrs(s), poll_s, _manifest(s, choice))
    out = Path(args.out)
    part = out.with_name(out.name + ".part")
    written = 0
    try:
        with part.open("w", encoding="utf-8") as f:
            f.write(json.dumps(header, separators=(",", ":")) + "\n")
            for rec in _records(folder, since, until):
                line = choice.line(rec)
                if line is not None:
                    f.write(json.dumps(line, separators=(",", ":")) + "\n")
                    written += 1
        os.replace(part, out)
    except OSError as exc:
        part.unlink(missing_ok=True)
        return _fail(f"cannot write {out}: {exc.strerror or exc}")
    print(
        f"wrote {out}: {written} records of {len(choice.devices)} devices, {choice.model_id} "
        f"{choice.baseline} -> {choice.candidate} (the candidate first seen "
        f"{human.duration(header['publish_s'])} into the trace), poll interval {poll_s:g} s"
    )
    return 0


def register(gs: Any) -> None:
    p = gs.add_parser("trace", help="write this site's recorded metrics as a replay trace")
    p.add_argument("--config", help="TOML config file (its data_dir is read)")
    p.add_argument("--data", help="the data folder (default: the config's data_dir)")
    p.add_argument("--since", required=True, help="how far back: e.g. 7d, 12h, 90m")
    p.add_argument("--model", help="the model (default: the only one recorded)")
    p.add_argument("--baseline", help="the baseline version (default: the second newest recorded)")
    p.add_argument("--candidate", help="the candidate version (default: the newest recorded)")
    p.add_argument(
        "--poll-interval",
        help="how often the replayed devices poll, e.g. 60s (default: devices.poll_interval_s)",
    )
    p.add_argument("out", metavar="OUT.jsonl")
    p.set_defaults(func=cmd_trace)
