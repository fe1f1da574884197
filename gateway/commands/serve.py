"""``ota-gateway serve``: run the gateway; with no config at all, on a data folder here."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import Any

from gateway import settings as settings_mod
from gateway.core import settings as schema
from gateway.redact import redact
from gateway.service import Gateway, run_until_signalled


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


def banner(gw: Gateway) -> str:
    s = gw.settings
    data = s.data_path.resolve()
    http = ", ".join(f"{a[0]}:{a[1]}" for a in gw.http_addresses if isinstance(a, tuple))
    op = ", ".join(f"{a[0]}:{a[1]}" for a in gw.operator_addresses if isinstance(a, tuple))
    mqtt = ", ".join(
        f"{h}:{p} ({name})" for name, (h, p) in (gw.broker.addresses.items() if gw.broker else [])
    )
    upstream = s.mirror.upstream
    lines = [
        f"OTA Gateway for site {s.site!r}",
        f"  device API and downloads: http://{http}/  (OTA_SERVICE_URL for devices)",
        f"  operator dashboard:       http://{op}/" if op else "  operator dashboard:       off",
        f"  MQTT broker (metrics):    {mqtt}",
        f"  device access:            {access_note(s)}",
        f"  data folder:              {data}",
        f"  mDNS:                     {gw.discovery['advertiser'].name!r} (_ota-gateway._tcp)"
        if gw.discovery
        else "  mDNS:                     off",
        f"  upstream registry:        {redact(upstream)}",
        f"  trusted keys:             {len(gw.trust.trusted.signing_keys())} (config trust.trusted_keys, or PEM files in {gw.key_dir})",
    ]
    if not Path(upstream).is_absolute() and "://" not in upstream:
        lines += [
            "",
            "To publish a model into the local registry folder:",
            "  ota-gateway registry keygen keys",
            f"  cp keys/public.pem {gw.key_dir}/",
            f"  ota-gateway registry publish {upstream} model.onnx --key keys/private.pem --model-id my-model --version 1.0.0",
            "The gateway picks up the new index on its next poll (mirror.poll_interval_s).",
        ]
    return "\n".join(lines)


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    logging.getLogger().setLevel(settings.log_level.upper())
    upstream = settings.mirror.upstream
    if "://" not in upstream:
        Path(upstream).mkdir(parents=True, exist_ok=True)
    gateway = Gateway(settings)
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
