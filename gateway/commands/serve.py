"""``ota-gateway serve``: run the gateway; with no config at all, on a data folder here."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import shlex
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from gateway.core import settings as schema
from gateway.core.human import duration
from gateway.runtime.redact import redact
from gateway.service import settings as settings_mod

if TYPE_CHECKING:  # the service (every room) is imported only to serve: client commands start fast
    from gateway.service.wiring import Gateway


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """The command line's values shaped like the TOML file (only what was given)."""
    out: dict[str, Any] = {}
    for attr, section, key in (
        ("data", None, "data_dir"),
        ("site", None, "site"),
        ("http", "http", "listen"),
        ("upstream", "mirror", "upstream"),
        ("trusted_key", "trust", "trusted_keys"),
        ("mqtt", "mqtt", "listen"),
        ("operator", "operator", "listen"),
    ):
        value = getattr(args, attr, None)
        if value is None:
            continue
        (out if section is None else out.setdefault(section, {}))[key] = value
    return out


def load_settings(args: argparse.Namespace) -> schema.Settings:
    return settings_mod.load(Path(args.config) if args.config else None, overrides=overrides_from(args))


def access_note(s: schema.Settings) -> str:
    mode = s.devices.access
    if mode == "token":
        return (
            "token (devices send Authorization: Bearer <token> over HTTP, "
            "MQTT user = device id, password = token)"
        )
    if mode == "mtls":
        return "mtls (devices present a client certificate whose CN is their id)"
    return (
        "OPEN: for labs and trusted LANs only. Any client on the network can speak as any device "
        '(each id is held to the address it first used); set devices.access = "token" for a site'
    )


def lan_addresses(host: str) -> list[str]:
    """The addresses a device on the LAN reaches a listener bound to ``host`` on: a wildcard bind
    stands for every interface address (loopback only when there is nothing else)."""
    if host not in ("0.0.0.0", "::", ""):
        return [host]
    families = {socket.AF_INET} if host != "::" else {socket.AF_INET, socket.AF_INET6}
    found: list[str] = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family not in families:
                continue
            ip = ipaddress.ip_address(a.address.split("%")[0])
            if not ip.is_link_local and str(ip) not in found:
                found.append(str(ip))
    lan = [a for a in found if not ipaddress.ip_address(a).is_loopback]
    return lan or found or ["127.0.0.1"]


def urls(addresses: list[Any], scheme: str = "http") -> str:
    """``http://A:PORT/`` for each LAN address of each bound socket; "off" when none is bound."""
    out: list[str] = []
    for a in addresses:
        if isinstance(a, tuple):
            for ip in lan_addresses(str(a[0])):
                url = f"{scheme}://{f'[{ip}]' if ':' in ip else ip}:{a[1]}/"
                if url not in out:
                    out.append(url)
    return "  ".join(out) or "off"


def own_command() -> str:
    """How to run this very ``ota-gateway`` from any shell: the absolute path of the installed
    script, or ``python -m gateway`` with this interpreter (a checkout, a venv not on PATH)."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "ota-gateway" and argv0.exists():
        return shlex.quote(str(argv0.resolve()))
    return f"{shlex.quote(sys.executable)} -m gateway"


def banner(gw: Gateway) -> str:
    s = gw.settings
    data = s.data_path.resolve()
    mqtt = ", ".join(
        f"{h}:{p} ({name})" for name, (h, p) in (gw.broker.addresses.items() if gw.broker else [])
    )
    upstream = s.mirror.upstream
    lines = [
        f"OTA Gateway for site {s.site!r}",
        f"  device API and downloads: {urls(gw.http_addresses, 'https' if s.http.tls_cert else 'http')}"
        "  (OTA_SERVICE_URL for devices)",
        f"  operator dashboard:       {urls(gw.operator_addresses)}",
        f"  MQTT broker (metrics):    {mqtt or 'off'}",
        f"  device access:            {access_note(s)}",
        f"  data folder:              {data}",
        f"  mDNS:                     {gw.discovery['advertiser'].name!r} (_ota-gateway._tcp)"
        if gw.discovery
        else "  mDNS:                     off",
        f"  upstream registry:        {redact(upstream)}",
        f"  polling:                  upstream every {duration(s.mirror.poll_interval_s)} "
        f"(mirror.poll_interval_s); devices told every {duration(s.devices.poll_interval_s)} "
        "(devices.poll_interval_s)",
        f"  trusted keys:             {len(gw.trust.trusted.signing_keys())} (config trust.trusted_keys, or PEM files in {gw.key_dir.resolve()})"
        if s.trust.format == "index"
        else f"  trust:                    TUF from {s.trust.tuf_root} (trust.tuf_root), metadata at "
        f"{s.trust.tuf_metadata}/ upstream; served to devices at /tuf/metadata/",
    ]
    if s.ddi.enabled:
        lines.insert(
            2,
            f"  hawkBit DDI:              tenant {s.ddi.tenant!r} on the device API"
            f" (/{s.ddi.tenant}/controller/v1/<device id>: SWUpdate, RAUC, Zephyr)",
        )
    if upstream and "://" not in upstream:
        exe = own_command()
        folder = shlex.quote(str(Path(upstream).resolve()))
        lines += [
            "",
            "To publish a model into the local registry folder:",
            f"  {exe} registry keygen keys",
            f"  cp keys/public.pem {shlex.quote(str(gw.key_dir.resolve()))}/",
            f"  {exe} registry publish {folder} model.onnx --key keys/private.pem --model-id my-model --version 1.0.0",
            "The gateway picks up the new index on its next poll (mirror.poll_interval_s).",
        ]
    return "\n".join(lines)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    logging.getLogger().setLevel(settings.log_level.upper())
    if settings.mirror.upstream == schema.MirrorSettings.upstream:
        # The first run's local registry folder, made for `registry publish`; any other folder
        # must exist (a typo must not become an empty registry polled forever).
        Path(settings.mirror.upstream).mkdir(parents=True, exist_ok=True)
    from gateway.service.process import run_until_signalled
    from gateway.service.wiring import Gateway

    gateway = Gateway.from_settings(settings)
    asyncio.run(run_until_signalled(gateway, lambda gw: print(banner(gw), flush=True)))
    return 0


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (default: none, or $OTA_GATEWAY_CONFIG)")
    p.add_argument("--data", help="data folder (data_dir)")
    p.add_argument("--site", help="site name")


def register(sub: Any) -> None:
    p = sub.add_parser("serve", help="run the gateway")
    add_common(p)
    p.add_argument("--http", metavar="HOST:PORT", help="device API address (http.listen)")
    p.add_argument("--upstream", metavar="URL_OR_DIR", help="cloud registry (mirror.upstream)")
    p.add_argument(
        "--trusted-key", action="append", metavar="PUBLIC_PEM", help="trusted cloud key (repeatable)"
    )
    p.add_argument(
        "--mqtt", metavar="HOST:PORT", help="embedded MQTT broker address (mqtt.listen; empty: off)"
    )
    p.add_argument(
        "--operator", metavar="HOST:PORT", help="operator API address (operator.listen; empty: off)"
    )
    p.set_defaults(func=cmd_serve)
