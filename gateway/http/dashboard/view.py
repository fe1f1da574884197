"""The dashboard's state for people: the status (:mod:`gateway.ops.status`) turned into text.

Pure: the status dict, the mirror's progress and ``now`` in; a JSON-ready dict of strings, lists
and small counts out, which the page puts on screen as it is. Nothing here is a Python value
shown raw: times are "3 min ago", sizes "85.2 GB", flags "yes"/"no", missing values a dash.
What needs attention comes first (``alerts``): a wrong clock, safe mode, an expired index, an
upstream that fails, damaged state files found at start-up, a halted or held gate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.http.dashboard import human
from gateway.http.dashboard.progress import Progress


def alerts(st: Mapping[str, Any], now: float) -> list[str]:
    out = []
    if not st["clock"]["trusted"]:
        out.append(f"Clock not trusted: {st['clock']['note']}")
    if st.get("safe_mode"):
        out.append(f"Safe mode: {st['safe_mode']}; candidates are held until released")
    index = st.get("index")
    if index is None:
        out.append("No signed index accepted yet: devices are offered nothing")
    elif index.get("expired"):
        out.append(f"The signed index (version {index['version']}) has expired: rollouts are frozen")
    if st["upstream"].get("last_error"):
        out.append(f"Upstream: {st['upstream']['last_error']}")
    for t in st.get("tasks", ()):
        if t.get("failing"):
            out.append(
                f"Task {t['name']} keeps failing ({t['restarts']} restarts; last: {t.get('last_error')}): "
                "the gateway is not ready, and systemd will restart it"
            )
    for r in st.get("recovered", ()):
        out.append(
            f"Recovered {r.get('file', 'a state file')}: {r.get('problem', '')}; {r.get('action', '')}"
        )
    for g in st.get("gates", ()):
        if g["stage"] in ("halted", "aborted"):
            out.append(
                f"Gate {g['deployment']} is {g['stage']}: {(g.get('last_decision') or {}).get('reason', '')}"
            )
        elif g.get("held_by"):
            out.append(f"Gate {g['deployment']} is held by {str(g['held_by']).removeprefix('operator:')}")
    return out


def summary(st: Mapping[str, Any], now: float) -> list[list[str]]:
    """Label / value pairs for the top of the page."""
    index = st.get("index")
    upstream = st["upstream"]
    if index is None:
        idx = "none yet"
    else:
        left = index["expires"] - now
        idx = f"version {index['version']}, " + (
            "EXPIRED" if index.get("expired") else f"expires in {human.duration(left)}"
        )
    clock = "trusted" if st["clock"]["trusted"] else "NOT TRUSTED"
    return [
        ["Site", str(st["gateway"]["site"])],
        ["Gateway", f"{st['gateway']['version']}, up {human.duration(st['gateway']['uptime_s'])}"],
        ["Signed index", idx],
        ["Upstream", str(upstream.get("url") or human.DASH)],
        ["Last good poll", human.ago(upstream.get("last_poll_ok"), now)],
        ["Clock", clock],
        ["Tasks", _tasks(st.get("tasks", ()))],
    ]


def _tasks(tasks: Any) -> str:
    """The supervised tasks in one line: all running, or which restarted and how often."""
    if not tasks:
        return human.DASH
    failing = [t["name"] for t in tasks if t.get("failing")]
    restarted = [f"{t['name']} {t['restarts']}x" for t in tasks if t.get("restarts")]
    head = f"{len(tasks)} supervised"
    if failing:
        return f"{head}; FAILING: {', '.join(failing)}"
    return f"{head}; restarts: {', '.join(restarted)}" if restarted else f"{head}; no restarts"


def mirroring(st: Mapping[str, Any], progress: Mapping[str, Progress]) -> list[dict[str, Any]]:
    """One row per deployment in the index: verified, or how far, how fast and how long to go."""
    out = []
    for d in st.get("deployments", ()):
        total = int(d.get("length") or 0)
        name = f"{d['model_id']}@{d['version']}"
        if d.get("mirrored"):
            out.append(
                {"name": name, "done": total, "total": total, "text": f"verified, {human.size(total)}"}
            )
            continue
        p = progress.get(d["sha256"])
        got = p.done if p else int(d.get("progress_bytes") or 0)
        text = f"{human.size(got)} of {human.size(total)}"
        if p and p.rate_bytes_per_s:
            text += f", {human.rate(p.rate_bytes_per_s)}"
            text += f", about {human.duration(p.eta_s)} left" if p.eta_s is not None else ""
        elif not got:
            text += ", waiting to start"
        else:
            text += ", stalled" if p and p.rate_bytes_per_s == 0 else ""
        out.append({"name": name, "done": min(got, total), "total": total, "text": text})
    return out


def uplink(st: Mapping[str, Any]) -> list[list[str]]:
    up = st.get("uplink") or {}
    rows = []
    for name, s in (up.get("sinks") or {}).items():
        state = s.get("up")
        rows.append([f"Sink {name}", "up" if state else "not tried yet" if state is None else "DOWN"])
    if not up.get("sinks"):
        rows.append(["Sinks", "none configured (reports stay in the outbox)"])
    box = up.get("outbox") or {}
    if "error" in box:
        rows.append(["Outbox", str(box["error"])])
    else:
        pending = box.get("pending") or {}
        records = sum(int(v.get("records") or 0) for v in pending.values())
        kinds = ", ".join(f"{k} {v.get('records', 0)}" for k, v in sorted(pending.items()))
        rows.append(["Outbox depth", f"{records} records, {human.size(box.get('pending_bytes'))}"])
        if kinds:
            rows.append(["Outbox by kind", kinds])
        oldest = box.get("oldest_age_s")
        if oldest is not None:
            rows.append(["Oldest waiting", human.duration(oldest)])
        drops = sum(int(n) for n in (box.get("drops_unreported") or {}).values())
        if drops:
            rows.append(["Dropped (bound)", f"{drops} records"])
    return rows


def box_health(st: Mapping[str, Any], devices_known: int) -> list[list[str]]:
    h = st.get("health") or {}
    mqtt = st.get("mqtt") or {}
    store = st.get("store") or {}
    quota = store.get("quota_bytes") or 0
    used = human.size(store.get("used_bytes"))
    load = h.get("load_average")
    return [
        ["CPU", human.percent(h.get("system_cpu_percent"))],
        ["RAM", human.percent(h.get("ram_percent")) + f" ({human.size(h.get('ram_available_bytes'))} free)"],
        [
            "Disk free",
            human.size(h.get("disk_free_bytes")) + f" ({human.percent(h.get('disk_percent'))} used)",
        ],
        ["Temperature", human.number(h.get("temperature_c"), "°C")],
        ["Load", " ".join(f"{v:.2f}" for v in load) if load else human.DASH],
        ["Gateway memory", human.size(h.get("process_rss_bytes"))],
        [
            "Store",
            f"{store.get('verified_blobs', 0)} artifacts, {used}"
            + (f" of {human.size(quota)}" if quota else ""),
        ],
        ["MQTT connections", str(mqtt.get("connections", human.DASH))],
        ["Devices known", str(devices_known)],
    ]


def last_errors(st: Mapping[str, Any]) -> list[list[str]]:
    return [[str(k), str(v)] for k, v in (st.get("last_errors") or {}).items()]
