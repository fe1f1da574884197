"""``ota-gateway status``: the running gateway's state, from its operator API.

By default in sections for a person (times as "3 min ago", sizes in MB/GB, transfers with their
rate and time left); ``--json`` prints the operator API's ``GET /status`` document unchanged, for
scripts. Which gateway it asks, and the check that it is the right one, are
:mod:`gateway.commands.operator_client`'s.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from gateway.commands import operator_client
from gateway.commands.serve import load_settings
from gateway.core.human import ago, duration, size, text, wave, when
from gateway.core.progress import Estimate
from gateway.http.dashboard import samples_panel

Lines = list[str]


def _field(name: str, value: str) -> str:
    return f"  {name + ':':18} {value}"


def _gateway(doc: dict[str, Any], now: float) -> Lines:
    gw = doc.get("gateway", {})
    clock = doc.get("clock", {})
    out = [
        f"Gateway for site {gw.get('site')!r} (version {text(gw.get('version'))})",
        _field("up for", f"{duration(gw.get('uptime_s'))} (pid {text(gw.get('pid'))})"),
        _field("data folder", text(gw.get("data_dir"))),
        _field(
            "clock",
            f"{when(clock.get('system'), now)}, "
            + ("trusted" if clock.get("trusted") else "NOT trusted: expiry is judged by the floor"),
        ),
    ]
    if clock.get("note"):
        out.append(_field("clock note", clock["note"]))
    if doc.get("safe_mode"):
        out.append(_field("SAFE MODE", text(doc["safe_mode"])))
    for r in doc.get("recovered", []):
        out.append(_field("recovered", ", ".join(f"{k} {text(v)}" for k, v in r.items())))
    return out


def _upstream(doc: dict[str, Any], now: float) -> Lines:
    up = doc.get("upstream", {})
    index = doc.get("index")
    out = [
        "Upstream",
        _field("registry", text(up.get("url"))),
        _field("last poll ok", ago(up.get("last_poll_ok"), now)),
    ]
    if up.get("last_error"):
        out.append(_field("last error", up["last_error"]))
    if index is None:
        out.append(_field("signed index", "none held yet"))
        if up.get("no_index"):
            out.append(_field("why", up["no_index"]))
        return out
    state = "EXPIRED: frozen at it" if index.get("expired") else "in effect"
    out.append(_field("signed index", f"version {index.get('version')}, {state}"))
    out.append(_field("expires", when(index.get("expires"), now)))
    for what, why in index.get("rejected_deployments", []):
        out.append(_field("rejected", f"{what}: {why}"))
    return out


def _deployment(d: dict[str, Any]) -> str:
    name = f"{d.get('model_id')}@{d.get('version')}"
    if d.get("mirrored"):
        state = f"mirrored, {size(d.get('length'))}"
    elif d.get("progress"):
        p = d["progress"]
        state = "mirroring " + Estimate(p["done_bytes"], p["total_bytes"], p["rate_bps"] or 0.0).line()
    else:
        state = f"not mirrored yet ({size(d.get('length'))})"
    cohort = d.get("target_cohort") or "all devices"
    pct = d.get("rollout_percentage")
    share = f"{pct:g}%" if isinstance(pct, int | float) else "-"
    return f"  {name:28} {state}; for {cohort}, {share}"


def _gates(doc: dict[str, Any]) -> Lines:
    gates = doc.get("gates", [])
    if not gates:
        return ["Canary gates", "  none (no deployment has been judged yet)"]
    out = ["Canary gates"]
    for g in gates:
        last = g.get("last_decision") or {}
        notes = [f"held by {g['held_by']}"] if g.get("held_by") else []
        if g.get("awaiting_approval"):
            notes.append("waiting for approval (ota-gateway gate approve)")
        if last:
            notes.append(f"last decision {last.get('action')}: {text(last.get('reason'))}")
        out.append(
            f"  {g['deployment']:28} {g['stage']} at {wave(g.get('wave'))}, {g['admitted']} admitted, "
            f"{g['ran']} ran it, baseline {text(g.get('baseline'))}"
            + (f"; {'; '.join(notes)}" if notes else "")
        )
    return out


def _box(doc: dict[str, Any]) -> Lines:
    store, health = doc.get("store", {}), doc.get("health", {})
    quota = store.get("quota_bytes") or 0
    out = [
        "This box",
        _field(
            "store",
            f"{store.get('verified_blobs', 0)} verified artifacts, {size(store.get('used_bytes'))}"
            + (f" of the {size(quota)} quota" if quota else " (no quota)"),
        ),
        _field(
            "disk",
            f"{size(health.get('disk_free_bytes'))} free ({text(health.get('disk_percent'))}% used)",
        ),
        _field(
            "memory",
            f"{text(health.get('ram_percent'))}% used, {size(health.get('ram_available_bytes'))} available; "
            f"this process {size(health.get('process_rss_bytes'))}",
        ),
        _field(
            "cpu",
            f"{text(health.get('system_cpu_percent'))}% (this process {text(health.get('process_cpu_percent'))}%)",
        ),
    ]
    if health.get("temperature_c") is not None:
        out.append(_field("temperature", f"{health['temperature_c']:.0f} °C"))
    if store.get("quarantined"):
        out.append(_field("quarantined", ", ".join(store["quarantined"])))
    return out


def _links(doc: dict[str, Any]) -> Lines:
    mqtt, uplink = doc.get("mqtt", {}), doc.get("uplink", {})
    listen = ", ".join(f"{a} ({n})" for n, a in (mqtt.get("listen") or {}).items()) or "off"
    outbox = uplink.get("outbox", {})
    pending = sum(v.get("records", 0) for v in (outbox.get("pending") or {}).values())
    sinks = ", ".join(
        f"{name} {'up' if s.get('up') else ('down' if s.get('up') is False else 'not tried yet')}"
        for name, s in (uplink.get("sinks") or {}).items()
    )
    out = [
        "Devices' links",
        _field(
            "MQTT broker",
            f"{listen}; {mqtt.get('connections', 0)} connected, {mqtt.get('refused', 0)} refused",
        ),
        _field("uplink", sinks or "none configured (reports stay in the outbox)"),
        _field("outbox", f"{pending} record(s) waiting, {size(outbox.get('pending_bytes'))}"),
    ]
    if outbox.get("error"):
        out.append(_field("outbox error", outbox["error"]))
    return out


def _samples(doc: dict[str, Any]) -> Lines:
    """Samples for retraining, in the dashboard card's words (nothing while they are off)."""
    rows = samples_panel.rows(doc)
    return ["Samples for retraining", *(_field(k.lower(), v) for k, v in rows)] if rows else []


def _tasks(doc: dict[str, Any]) -> Lines:
    """The supervised tasks: each one's state and restarts; a failing one says so first."""
    tasks = doc.get("tasks") or []
    out = ["Tasks"]
    for t in tasks:
        state = "FAILING, not ready" if t.get("failing") else text(t.get("state"))
        line = f"{state}, {t.get('restarts', 0)} restart(s)"
        if t.get("last_error"):
            line += f"; last error {duration(t.get('last_failure_ago_s'))} ago: {t['last_error']}"
        out.append(_field(text(t.get("name")), line))
    return out if tasks else []


def _errors(doc: dict[str, Any]) -> Lines:
    errors = doc.get("last_errors") or {}
    return ["Last errors", *(f"  {k}: {v}" for k, v in sorted(errors.items()))] if errors else []


def _deployments(doc: dict[str, Any]) -> Lines:
    found = [_deployment(d) for d in doc.get("deployments") or []]
    return ["Deployments", *(found or ["  none in the signed index"])]


def render(doc: dict[str, Any], now: float) -> str:
    """The status document as sections for a person; pure (``now`` in)."""
    sections: list[Callable[[], Lines]] = [
        lambda: _gateway(doc, now),
        lambda: _upstream(doc, now),
        lambda: _deployments(doc),
        lambda: _gates(doc),
        lambda: _box(doc),
        lambda: _links(doc),
        lambda: _samples(doc),
        lambda: _tasks(doc),
        lambda: _errors(doc),
    ]
    return "\n\n".join("\n".join(lines) for lines in (s() for s in sections) if lines)


def cmd_status(args: argparse.Namespace) -> int:
    client = operator_client.connect(args, load_settings(args))
    doc = client.status()
    print(json.dumps(doc, indent=2) if args.json else render(doc, time.time()))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="show the running gateway's state")
    operator_client.add_client_args(p)
    p.add_argument("--json", action="store_true", help="the operator API's JSON, for scripts")
    p.set_defaults(func=cmd_status)
