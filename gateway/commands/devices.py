"""``ota-gateway devices``: what the gateway knows of each device, and where it learnt it.

Reads the running gateway's inventory through its operator API, or the persisted inventory in the
data folder when no gateway runs. Sources: ``poll`` (the device asked for updates), ``file`` (the
site inventory), ``mdns`` (it advertised itself), ``metrics`` and ``event``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from gateway.commands import operator_client
from gateway.commands.serve import load_settings
from gateway.core.human import ago
from gateway.runtime import atomic


def _when(ts: float | None) -> str:
    return ago(ts, time.time()) if ts else "-"


def cmd_devices(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if operator_client.gateway_runs(args, settings):
        doc: dict[str, Any] = operator_client.connect(args, settings).call("GET", "/devices")
    else:
        path = settings.data_path / "inventory.json"
        doc = atomic.read_json(path, {}) or {}
        note = operator_client.stale_note(settings, path, time.time())
        if note:
            print(note, file=sys.stderr)
    devices = sorted(doc.get("devices", []), key=lambda d: d["device_id"])
    if not args.all:
        devices = [d for d in devices if not d.get("gone")]
    if args.json:
        print(json.dumps({"devices": devices}, indent=2))
        return 0
    print(f"{'DEVICE':24} {'SOURCES':18} {'MODEL@VERSION':24} {'LAST SEEN':19} {'LAST EVENT':12} NOTES")
    for d in devices:
        model = f"{d.get('model_id') or '-'}@{d.get('model_version') or '-'}"
        notes = [f"{k}={v}" for k, v in sorted(d.get("attrs", {}).items())]
        if d.get("blocked_by_firmware"):
            notes.insert(0, f"BLOCKED BY FIRMWARE (needs newer fw for {d['blocked_by_firmware']})")
        if d.get("gone"):
            notes.insert(0, "GONE")
        print(
            f"{d['device_id']:24} {','.join(d.get('sources', [])):18} {model:24} "
            f"{_when(d.get('last_seen')):19} {d.get('last_event') or '-':12} {' '.join(notes)}"
        )
    print(f"{len(devices)} device(s)")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("devices", help="list the devices this gateway knows, with their source")
    operator_client.add_client_args(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--all", action="store_true", help="include devices marked gone")
    p.set_defaults(func=cmd_devices)
