"""``ota-gateway discover``: browse the LAN once and list the gateways and devices that answer.

For checking a site's network: is the gateway visible from here, which devices advertise, and does
each device record parse (a record the gateway would ignore is listed with the reason). It opens its
own mDNS sockets (port 5353 is shared, so it runs beside a running gateway) on
``discovery.interfaces`` or ``--interface``, browses for ``--timeout`` seconds, resolves what it found
and prints a table or, with ``--json``, one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

from gateway.core import settings as schema
from gateway.core.errors import ConfigError
from gateway.discovery.advertise import GATEWAY_TYPE
from gateway.discovery.browse import DEVICE_TYPE
from gateway.discovery.net import open_lan
from gateway.discovery.txt import device_attrs, parse_txt
from gateway.service import settings as settings_mod

MAX_FOUND = 10_000  # instance names kept per run
RESOLVE_TIMEOUT_MS = 2000
RESOLVE_CONCURRENCY = 32


def _decoded(text: bytes) -> dict[str, Any]:
    try:
        return dict(parse_txt(text))
    except ValueError:
        return {"(raw)": text.hex()}


async def browse_once(discovery: schema.DiscoverySettings, timeout_s: float) -> dict[str, Any]:
    """Browse gateways and devices for ``timeout_s``; return what resolved, as plain values."""
    lan = open_lan(discovery)
    found: dict[tuple[str, str], None] = {}

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is not ServiceStateChange.Removed and len(found) < MAX_FOUND:
            found[(service_type, name)] = None

    try:
        browser = AsyncServiceBrowser(lan.aiozc.zeroconf, [GATEWAY_TYPE, DEVICE_TYPE], handlers=[on_change])
        await asyncio.sleep(timeout_s)  # the browse window itself, not a synchronisation
        await browser.async_cancel()
        gate = asyncio.Semaphore(RESOLVE_CONCURRENCY)

        async def resolve(type_: str, name: str) -> dict[str, Any]:
            info = AsyncServiceInfo(type_, name)
            async with gate:
                ok = await info.async_request(lan.aiozc.zeroconf, RESOLVE_TIMEOUT_MS)
            entry: dict[str, Any] = {
                "name": name[: -len(type_) - 1],
                "host": info.server,
                "addresses": info.parsed_scoped_addresses() if ok else [],
                "port": info.port,
                "txt": _decoded(info.text) if ok else {},
                "resolved": ok,
            }
            if type_ == DEVICE_TYPE and ok:
                try:
                    entry["device_id"], _ = device_attrs(info.text)
                except ValueError as exc:
                    entry["ignored"] = str(exc)
            return entry

        results = await asyncio.gather(*(resolve(t, n) for t, n in found))
    finally:
        await lan.close()
    keys = list(found)
    return {
        "interfaces": list(lan.binding.addresses),
        "gateways": [r for (t, _), r in zip(keys, results, strict=True) if t == GATEWAY_TYPE],
        "devices": [r for (t, _), r in zip(keys, results, strict=True) if t == DEVICE_TYPE],
    }


def _table(rows: list[dict[str, Any]], title: str) -> str:
    lines = [f"{title}: {len(rows)}"]
    for r in sorted(rows, key=lambda r: r["name"]):
        where = ", ".join(r["addresses"]) or "(no address)"
        txt = " ".join(f"{k}={v}" if v is not None else k for k, v in r["txt"].items())
        note = f"  IGNORED: {r['ignored']}" if "ignored" in r else ""
        lines.append(f"  {r['name']}  {where} port {r['port']}  {txt}{note}")
    return "\n".join(lines)


def cmd_discover(args: argparse.Namespace) -> int:
    cfg = settings_mod.load(Path(args.config) if args.config else None)
    discovery = cfg.discovery
    if args.interface:
        discovery = dataclasses.replace(discovery, interfaces=tuple(args.interface))
    if not 0 < args.timeout <= 300:
        raise ConfigError("command line", "--timeout", "seconds in (0, 300]")
    result = asyncio.run(browse_once(discovery, args.timeout))
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(f"browsed {args.timeout:g} s on {', '.join(result['interfaces'])}")
        print(_table(result["gateways"], "gateways (_ota-gateway._tcp)"))
        print(_table(result["devices"], "devices (_ota-device._tcp)"))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("discover", help="browse the LAN once (mDNS) and list gateways and devices")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to browse (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--config", help="gateway.toml (for discovery.interfaces); default: OTA_GATEWAY_CONFIG")
    p.add_argument("--interface", action="append", default=[], help="interface name or address (repeatable)")
    p.set_defaults(func=cmd_discover)
