"""``ota-gateway trust status | reset-floor``: the clock floor, where it came from, and its one way down.

``status`` reads the data folder directly (``trust/state.json`` and the held ``trust/index.json``),
so it works whether or not a gateway runs on it. ``reset-floor`` changes the floor only on a
stopped gateway: while a gateway process holds the data folder lock it refuses with one line,
because the running process keeps its floor in memory and would write the old one back with the
next accepted index. Stopped, it takes the same lock, appends its audit record (who, why, the floor
before and after, fsynced) to ``trust/audit.jsonl``, then lowers the floor to the system clock.
Why this is not done automatically is in :mod:`gateway.trust.clock`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import time
from typing import Any

from gateway.commands.serve import add_common, load_settings
from gateway.core.errors import GatewayError, StorageError
from gateway.core.manifest import format_time
from gateway.core.settings import Settings
from gateway.runtime import atomic, instance
from gateway.store.lock import data_dir_in_use, lock_data_dir
from gateway.trust.clock import floor_ahead_s
from gateway.trust.state import TrustState


def _state(settings: Settings) -> TrustState:
    return TrustState(
        settings.data_path / "trust",
        {},
        settings.site,
        settings.trust.min_valid_time,
        max_future_skew_s=settings.trust.max_future_skew_s,
    )


def trust_status(settings: Settings, system_now: float) -> dict[str, Any]:
    st = _state(settings)
    st.load_state(repair=False)  # beside a running gateway: read, never move its files
    reading = st.clock(system_now)
    held: dict[str, Any] | None = None
    signed = (atomic.read_json(st.dir / "index.json", None) or {}).get("signed")
    if isinstance(signed, dict):
        held = {
            "version": signed.get("version"),
            "issued": signed.get("issued"),
            "expires": signed.get("expires"),
        }
    ahead = floor_ahead_s(reading, st.min_valid_time)
    return {
        "floor": format_time(reading.floor),
        "floor_s": reading.floor,
        "source": st.source(),
        "min_valid_time": format_time(st.min_valid_time),
        "system_clock": format_time(system_now),
        "clock_trusted": reading.trusted,
        "floor_ahead_s": None if ahead is None else round(ahead, 1),
        "max_future_skew_s": st.max_future_skew_s,
        "highest_version": st.trusted.highest_version,
        "held_index": held,
        "gateway_running": data_dir_in_use(settings.data_path),
        "note": st.advice(system_now),
    }


def _describe(source: dict[str, Any]) -> str:
    kind = source.get("kind")
    if kind == "index":
        text = f"signed index version {source.get('version')}, issued {source.get('issued')}"
        if source.get("capped"):
            text += " (capped at the local clock plus trust.max_future_skew_s)"
        if source.get("clock_trusted") is False:
            text += ", accepted while the system clock was not trusted"
        return text
    if kind == "reset":
        return f"reset-floor by {source.get('who')} at {source.get('at')}: {source.get('why')}"
    if kind == "min_valid_time":
        return "trust.min_valid_time (no accepted index raised it)"
    return "unknown (a state file from before the source was recorded)"


def cmd_status(args: argparse.Namespace) -> int:
    out = trust_status(load_settings(args), time.time())
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    held = out["held_index"]
    print(f"clock floor:     {out['floor']}")
    print(f"  came from:     {_describe(out['source'])}")
    print(f"system clock:    {out['system_clock']} ({'trusted' if out['clock_trusted'] else 'NOT trusted'})")
    print(f"min_valid_time:  {out['min_valid_time']}")
    print(f"max future skew: {out['max_future_skew_s']:.0f}s (trust.max_future_skew_s)")
    print(
        "held index:      "
        + (
            f"version {held['version']}, issued {held['issued']}, expires {held['expires']}"
            if held
            else "none"
        )
    )
    record = instance.read_record(load_settings(args).data_path) if out["gateway_running"] else None
    running = f"yes (pid {record.pid}, operator API {record.operator or 'off'})" if record else "yes"
    print(f"gateway running: {running if out['gateway_running'] else 'no'}")
    if out["note"]:
        print(f"note: {out['note']}")
    return 0


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "unknown"


def cmd_reset_floor(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if not args.why.strip():
        raise GatewayError("reset-floor: --why must say why the floor is being reset")
    if data_dir_in_use(settings.data_path):
        raise StorageError(
            f"reset-floor: a gateway is running on {settings.data_path}; stop it first "
            "(it would write its old floor back)",
            path=str(settings.data_path),
        )
    lock = lock_data_dir(settings.data_path)
    try:
        now = time.time()
        st = _state(settings)
        record = st.reset_floor(now, who=args.who or _login(), why=args.why)
    finally:
        lock.close()
    if record is None:
        print(
            f"clock floor {format_time(st.floor)} is not ahead of the system clock {format_time(now)}: nothing to reset"
        )
        return 0
    print(
        f"clock floor reset from {record['floor_before']} to {record['floor_after']} (audited in {st.dir / 'audit.jsonl'})"
    )
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("trust", help="show the trusted-time floor, or reset it (audited)")
    ts = p.add_subparsers(dest="trust_command", required=True, metavar="ACTION")
    s = ts.add_parser("status", help="the clock floor, where it came from, and whether the clock is trusted")
    add_common(s)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)
    r = ts.add_parser(
        "reset-floor",
        help="lower the clock floor to the system clock (gateway stopped; audited in trust/audit.jsonl)",
    )
    add_common(r)
    r.add_argument("--why", required=True, help="why (kept in the audit record)")
    r.add_argument("--who", help="who (default: the login name)")
    r.set_defaults(func=cmd_reset_floor)
