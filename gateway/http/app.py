"""The device-facing aiohttp application: downloads, polls, metrics, events, and tier endpoints.

This module only assembles routes; each concern has its own module (``/healthz`` and ``/readyz``
are :mod:`gateway.http.probes`, added by the service). It also serves the verified
index and key list as it holds them (``/index.json``, ``/sites/<site>/index.json``, ``/keys.json``)
so that another gateway can use this one as its upstream (tiers) with the cloud's own signatures.
Like the model files, they need a device credential when ``devices.access`` is not ``open``: a
device token (``Authorization: Bearer``, or as the password of HTTP Basic, which is what a child
gateway sends for ``mirror.upstream = "http://child:TOKEN@parent:8080/"``) or a client certificate.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from gateway.access import Credentials
from gateway.core.settings import Settings
from gateway.http import devices
from gateway.http.artifacts import add_artifact_routes
from gateway.http.context import (
    CHANGES,
    CLOCK,
    CREDENTIALS,
    DEVICE_SETTINGS,
    HELD_INDEX,
    HELD_KEYS,
    HTTP_SETTINGS,
    INGEST,
    INVENTORY,
    POLLS,
    SITE,
    STATS,
    DeviceIngest,
)
from gateway.inventory.store import Inventory
from gateway.notify import Changes
from gateway.polls import PollAnswers
from gateway.stats import Stats
from gateway.store.artifacts import ArtifactStore
from gateway.trust.index import KeyList, SiteIndex


async def serve_held_index(request: web.Request) -> web.Response:
    await devices.authorize_any(request)
    site = request.match_info.get("site")
    index = request.app[HELD_INDEX]()
    if index is None or (site is not None and site != request.app[SITE]):
        raise web.HTTPNotFound(text="no index held for that site\n")
    return web.Response(
        body=index.raw, content_type="application/json", headers={"Cache-Control": "no-cache"}
    )


async def serve_held_keys(request: web.Request) -> web.Response:
    await devices.authorize_any(request)
    key_list = request.app[HELD_KEYS]()
    if key_list is None:
        raise web.HTTPNotFound(text="no key list held\n")
    return web.Response(
        body=key_list.raw, content_type="application/json", headers={"Cache-Control": "no-cache"}
    )


def build_device_app(
    settings: Settings,
    *,
    credentials: Credentials,
    inventory: Inventory,
    stats: Stats,
    clock: Callable[[], float],
    polls: PollAnswers,
    changes: Changes,
    ingest: DeviceIngest,
    store: ArtifactStore,
    held_index: Callable[[], SiteIndex | None],
    held_keys: Callable[[], KeyList | None],
) -> web.Application:
    app = web.Application(client_max_size=settings.http.max_body_bytes)
    app[SITE] = settings.site
    app[HTTP_SETTINGS] = settings.http
    app[DEVICE_SETTINGS] = settings.devices
    app[CREDENTIALS] = credentials
    app[INVENTORY] = inventory
    app[STATS] = stats
    app[CLOCK] = clock
    app[POLLS] = polls
    app[CHANGES] = changes
    app[INGEST] = ingest
    app[HELD_INDEX] = held_index
    app[HELD_KEYS] = held_keys
    app.router.add_get("/index.json", serve_held_index)
    app.router.add_get("/sites/{site}/index.json", serve_held_index)
    app.router.add_get("/keys.json", serve_held_keys)
    app.router.add_get("/devices/{device_id}/updates", devices.poll)
    app.router.add_post("/devices/{device_id}/events", devices.event)
    app.router.add_post("/devices/{device_id}/metrics", devices.metrics)
    add_artifact_routes(app, store, devices.authorize_any, stats)
    return app
