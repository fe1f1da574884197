"""``ota-gateway cache ls | verify | prune``: look after the artifact store.

``ls`` reads the data folder directly. ``verify`` and ``prune`` change it: while a gateway runs on
that folder they go through its operator API (so its view stays right); when none runs, they work on
the folder directly under the same lock the gateway takes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from gateway.commands import operator_client
from gateway.commands.serve import add_common, load_settings
from gateway.core.human import size
from gateway.core.manifest import parse_deployment
from gateway.core.settings import Settings
from gateway.core.site_effects import rollback_pins
from gateway.inventory.store import Inventory
from gateway.rollout.keeper import GateKeeper
from gateway.runtime import atomic
from gateway.store.artifacts import ArtifactStore
from gateway.store.blobs import BlobStore
from gateway.store.lock import lock_data_dir


def _held_deployments(settings: Settings) -> list[Any]:
    raw = atomic.read_json(settings.data_path / "trust" / "index.json", None)
    out = []
    for item in (raw or {}).get("signed", {}).get("deployments", []):
        try:
            out.append(parse_deployment(item))
        except Exception:
            continue
    return out


def cmd_ls(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    blobs = BlobStore(settings.data_path)
    catalog = atomic.read_json(settings.data_path / "catalog.json", {}) or {}
    note = operator_client.stale_note(settings, settings.data_path / "catalog.json", time.time())
    if note:
        print(note, file=sys.stderr)
    names: dict[str, list[str]] = {}
    for e in catalog.get("entries", []):
        names.setdefault(e["sha256"], []).append(f"{e['model_id']}/{e['version']}/{e['filename']}")
    live = {d.sha256 for d in _held_deployments(settings)}
    rows: list[dict[str, Any]] = []
    for sha in blobs.list_blobs():
        info = blobs.info(sha)
        last = catalog.get("last_access", {}).get(sha)
        rows.append(
            {
                "sha256": sha,
                "bytes": info.size if info else None,
                "names": names.get(sha, []),
                "in_effect": sha in live,
                "last_access": time.strftime("%Y-%m-%d %H:%M", time.gmtime(last)) if last else "-",
            }
        )
    partials: list[dict[str, Any]] = [
        {"sha256": sha, "bytes": blobs.partial_state(sha)[0]} for sha in blobs.list_partials()
    ]
    if args.json:
        print(json.dumps({"blobs": rows, "partials": partials}, indent=2))
        return 0
    print(f"{'SHA256':14} {'SIZE':>10} {'IN EFFECT':9} {'LAST USED':16} NAMES")
    for r in rows:
        print(
            f"{r['sha256'][:12]}.. {size(r['bytes']):>10} {'yes' if r['in_effect'] else 'no':9} {r['last_access']:16} {', '.join(r['names'])}"
        )
    for p in partials:
        print(f"{p['sha256'][:12]}.. {size(p['bytes']):>10} (partial transfer)")
    return 0


async def _offline(settings: Settings, action: str) -> dict[str, Any]:
    lock = lock_data_dir(settings.data_path)
    try:
        inventory = Inventory(settings.data_path / "inventory.json")
        await asyncio.to_thread(inventory.load)
        store = ArtifactStore(
            settings.data_path,
            quota_bytes=settings.store.quota_bytes,
            running=lambda: [(r.model_id, r.model_version or "") for r in inventory.live()],
        )
        await store.open()  # re-hashes every blob: corrupt ones are removed here
        if action == "verify":
            return {"checked": len(store.blobs.list_blobs()), "verified": sorted(store.verified)}
        held = _held_deployments(settings)
        store.catalog.learn(held, time.time())
        gates = GateKeeper(settings.gates, settings.data_path / "gates")
        await asyncio.to_thread(gates.load)
        pins = rollback_pins(gates.site)  # the site loop's pins after a transition, the same way
        store.catalog.pin_rollback_targets(pins.baselines, pins.halted)
        return {"removed": await store.evictor.prune_unprotected()}
    finally:
        lock.close()


def _maintain(args: argparse.Namespace, action: str) -> int:
    settings = load_settings(args)
    if operator_client.gateway_runs(args, settings):
        result = operator_client.connect(args, settings).call("POST", f"/cache/{action}")
    else:
        result = asyncio.run(_offline(settings, action))
    print(json.dumps(result, indent=2) if args.json else _confirmation(action, result))
    return 0


def _confirmation(action: str, result: dict[str, Any]) -> str:
    """One line that says what was done (``--json``: the whole result)."""
    if action == "prune":
        removed = result.get("removed", [])
        names = ", ".join(sha[:12] for sha in removed)
        return (
            f"prune: removed {len(removed)} artifact(s){': ' + names if names else ' (nothing unprotected)'}"
        )
    corrupt = result.get("corrupt_removed")
    if corrupt is None:  # offline: the store removed any corrupt blob while it opened
        return (
            f"verify: {result.get('checked', 0)} artifact(s) checked, {len(result.get('verified', []))} good"
        )
    bad = f"{len(corrupt)} corrupt, removed and fetched again: {', '.join(s[:12] for s in corrupt)}"
    return f"verify: {result.get('checked', 0)} artifact(s) checked, " + (bad if corrupt else "all good")


def register(sub: Any) -> None:
    p = sub.add_parser("cache", help="list, verify or prune the artifact store")
    cs = p.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    ls = cs.add_parser("ls", help="list verified blobs and partial transfers")
    add_common(ls)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_ls)
    v = cs.add_parser("verify", help="re-hash every blob; corrupt ones are removed and fetched again")
    operator_client.add_client_args(v)
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=lambda a: _maintain(a, "verify"))
    pr = cs.add_parser(
        "prune", help="remove blobs no device can be offered, runs, or falls back to (see store.quota_bytes)"
    )
    operator_client.add_client_args(pr)
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=lambda a: _maintain(a, "prune"))
