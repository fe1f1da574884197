"""The device-facing aiohttp application: downloads, polls, metrics, events, and tier endpoints.

This module only assembles routes; each concern has its own module. It also serves the verified
index and key list as it holds them (``/index.json``, ``/sites/<site>/index.json``, ``/keys.json``)
so that another gateway can use this one as its upstream (tiers) with the cloud's own signatures.
Like the model files, they need a device credential when ``devices.access`` is not ``open``: a
device token (``Authorization: Bearer``, or as the password of HTTP Basic, which is what a child
gateway sends for ``mirror.upstream = "http://child:TOKEN@parent:8080/"``) or a client certificate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from gateway.http import devices
from gateway.http.artifacts import add_artifact_routes
from gateway.http.context import GATEWAY, gateway_of

if TYPE_CHECKING:
    from gateway.service import Gateway


async def healthz(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    index = gw.mirror.index
    return web.json_response(
        {"ok": True, "site": gw.settings.site, "index_version": index.version if index else None}
    )


async def held_index(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    devices.authorize_any(gw, request)
    site = request.match_info.get("site")
    index = gw.mirror.index
    if index is None or (site is not None and site != gw.settings.site):
        raise web.HTTPNotFound(text="no index held for that site\n")
    return web.Response(
        body=index.raw, content_type="application/json", headers={"Cache-Control": "no-cache"}
    )


async def held_keys(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    devices.authorize_any(gw, request)
    key_list = gw.trust.trusted.key_list
    if key_list is None:
        raise web.HTTPNotFound(text="no key list held\n")
    return web.Response(
        body=key_list.raw, content_type="application/json", headers={"Cache-Control": "no-cache"}
    )


def build_device_app(gw: Gateway) -> web.Application:
    app = web.Application(client_max_size=gw.settings.http.max_body_bytes)
    app[GATEWAY] = gw
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/index.json", held_index)
    app.router.add_get("/sites/{site}/index.json", held_index)
    app.router.add_get("/keys.json", held_keys)
    app.router.add_get("/devices/{device_id}/updates", devices.poll)
    app.router.add_post("/devices/{device_id}/events", devices.event)
    app.router.add_post("/devices/{device_id}/metrics", devices.metrics)

    async def authorize_download(request: web.Request) -> None:
        devices.authorize_any(gw, request)

    add_artifact_routes(app, gw.store, authorize_download)
    return app
