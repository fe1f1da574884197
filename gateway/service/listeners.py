"""What the gateway opens to the network: an HTTP app on its address, mDNS advertising and browsing.

Each opened thing is pushed on the caller's exit stack, so it closes in reverse on the way down."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

from aiohttp import web

from gateway.core.errors import ConfigError
from gateway.core.settings import HttpSettings, Settings
from gateway.discovery.advertise import Advertiser
from gateway.discovery.browse import DeviceBrowser
from gateway.discovery.net import open_lan
from gateway.http import listener
from gateway.http.fast_downloads import FastDownloads
from gateway.inventory.store import Inventory
from gateway.runtime.stats import Stats


async def serve(
    stack: AsyncExitStack,
    app: web.Application,
    host: str,
    port: int,
    http: HttpSettings,
    stats: Stats,
    tls: ssl.SSLContext | None,
    name: str = "http",
    guards: list[listener.Guard] | None = None,
    fast: FastDownloads | None = None,
) -> list[Any]:
    """Listen with ``app`` on ``host:port``; an address in use is a configuration error. The
    listener's guard (its live connection count) is added to ``guards``; ``fast`` answers the
    simple verified-blob downloads beside aiohttp (:mod:`gateway.http.fast_downloads`)."""
    limits = listener.HttpLimits.from_settings(http)
    if name == "operator":  # same timeouts, a smaller cap
        limits = replace(
            limits, max_connections=min(limits.max_connections, listener.OPERATOR_MAX_CONNECTIONS)
        )
    guard = listener.Guard(name, limits, stats, fast)
    try:
        runner, addresses = await listener.start_http(
            app, host, port, name=name, limits=limits, stats=stats, tls=tls, guard=guard
        )
    except OSError as exc:
        raise ConfigError(
            "configuration", f"listen {host}:{port}", f"a free address ({exc.strerror})"
        ) from exc
    stack.push_async_callback(runner.cleanup)
    if guards is not None:
        guards.append(guard)
    return addresses


async def start_discovery(
    stack: AsyncExitStack,
    settings: Settings,
    inventory: Inventory,
    clock: Callable[[], float],
    supervise: Callable[..., Any],
    *,
    http_port: int,
    mqtt_port: int | None,
    cert_sha256: str | None,
) -> dict[str, Any]:
    """Advertise the device API and the broker over mDNS; browse devices into the inventory."""
    lan = open_lan(settings.discovery)
    stack.push_async_callback(lan.close)
    advertiser = Advertiser(
        settings.discovery,
        site=settings.site,
        http_port=http_port,
        tls=bool(settings.http.tls_cert),
        mqtt_port=mqtt_port,
        cert_sha256=cert_sha256,
        lan=lan,
    )
    browser = DeviceBrowser(settings.discovery, inventory, clock, lan=lan, supervise=supervise)
    await advertiser.start()
    stack.push_async_callback(advertiser.stop)
    await browser.start()
    stack.push_async_callback(browser.stop)
    return {"advertiser": advertiser, "browser": browser}
