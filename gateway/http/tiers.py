"""What a parent gateway serves its child gateways (tiers): the signed indexes and key list it holds.

``/index.json`` and ``/sites/<own site>/index.json`` are the index this gateway mirrors for
itself; ``/sites/<child>/index.json`` is the index of a child site it holds for its children
(``mirror.child_sites``, :mod:`gateway.mirror.children`); ``/keys.json`` the key list. All are the
cloud's raw bytes, never re-signed: the child verifies the cloud's signatures end to end. Like
model files they need a device credential when ``devices.access`` is not ``open``: a token
(``Authorization: Bearer``, which the child sends from ``mirror.token``, or as the password of HTTP
Basic for ``mirror.upstream = "http://child:TOKEN@parent:8080/"``) or a client certificate the
site CA signed (the child's ``mirror.client_cert``).

A child names its site in ``X-OTA-Gateway``; a request that does with that child's own credential
(``mirror.child_tokens``, or a certificate for ``gateway.<site>``) is recorded in the inventory as
``gateway.<site>`` with ``kind = gateway``, so the parent lists its children beside its devices
(and reports them upstream the same way). With any other credential the header is not believed:
the request is served as a device's, and nothing is recorded (``tiers.unproven_announcements``).
"""

from __future__ import annotations

import re

from aiohttp import web

from gateway.core.manifest import valid_id
from gateway.http import devices
from gateway.http.context import (
    CHILDREN,
    CLOCK,
    HELD_INDEX,
    HELD_KEYS,
    HELD_SITE,
    HELD_TUF,
    INVENTORY,
    SITE,
    STATS,
)

GATEWAY_HEADER = "X-OTA-Gateway"
_TUF_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,200}\.json$")


def note_child(request: web.Request) -> None:
    """A child gateway with its own credential: into the inventory as a device of kind ``gateway``."""
    site = request.headers.get(GATEWAY_HEADER, "")
    if not site:
        return
    if not valid_id(site):
        raise devices.bad_request(f"{GATEWAY_HEADER}: a site name of letters, digits, '.', '_' or '-'")
    app = request.app
    proven = app[CHILDREN].site_of(bearer=devices.bearer_of(request), cert_cn=devices.cert_cn_of(request))
    if proven != site:  # only a child gateway's own credential announces it
        app[STATS].inc("tiers.unproven_announcements")
        return
    app[INVENTORY].upsert(
        f"gateway.{site}", {"kind": "gateway", "site": site}, source="tier", now=app[CLOCK]()
    )
    app[STATS].inc("tiers.child_requests")


async def serve_held_index(request: web.Request) -> web.Response:
    await devices.authorize_any(request)
    note_child(request)
    site = request.match_info.get("site")
    index = request.app[HELD_INDEX]()
    if site is not None and site != request.app[SITE]:
        index = request.app[HELD_SITE](site)
    if index is None:
        raise web.HTTPNotFound(text="no index held for that site\n")
    return web.Response(
        body=index.raw, content_type="application/json", headers={"Cache-Control": "no-cache"}
    )


async def serve_held_keys(request: web.Request) -> web.Response:
    await devices.authorize_any(request)
    note_child(request)
    key_list = request.app[HELD_KEYS]()
    if key_list is None:
        raise web.HTTPNotFound(text="no key list held\n")
    return web.Response(
        body=key_list.raw, content_type="application/json", headers={"Cache-Control": "no-cache"}
    )


async def serve_tuf_metadata(request: web.Request) -> web.Response:
    """The TUF metadata this gateway verified, byte for byte, at the path a TUF client asks for
    (``/tuf/metadata/<N>.root.json``, ``timestamp.json``, ``<V>.snapshot.json``, ...): a device's
    python-tuf ``Updater`` or a child gateway checks every signature against the cloud's keys."""
    await devices.authorize_any(request)
    note_child(request)
    name = request.match_info["name"]
    data = request.app[HELD_TUF](name) if _TUF_NAME.match(name) else None
    if data is None:
        raise web.HTTPNotFound(text="no such TUF metadata held\n")
    return web.Response(body=data, content_type="application/json", headers={"Cache-Control": "no-cache"})


def add_tier_routes(app: web.Application) -> None:
    app.router.add_get("/tuf/metadata/{name}", serve_tuf_metadata)
    app.router.add_get("/index.json", serve_held_index)
    app.router.add_get("/sites/{site}/index.json", serve_held_index)
    app.router.add_get("/keys.json", serve_held_keys)
