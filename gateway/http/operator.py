"""The operator API: status, cache maintenance, gate controls, and the dashboard's routes
(:mod:`gateway.http.dashboard`).

Bound to loopback by default; anywhere else it requires ``operator.token``, sent as
``Authorization: Bearer <token>`` or as the password of HTTP Basic (so a browser can open the
dashboard). Token comparison is constant-time.

A token is not the only guard, and loopback is no guard at all against a web page open in a
browser on the box (a browser sends Basic credentials it remembers, and reaches 127.0.0.1). So
every request also passes :func:`refusal` (pure, from the request's headers):

- ``Host`` must name this gateway: an IP address, ``localhost``, this machine's host name, the
  ``operator.listen`` host or one of ``operator.allowed_hosts``. A DNS-rebound name
  (``evil.example`` resolving to 127.0.0.1) is refused, for reads too.
- A state-changing request (POST, PUT, PATCH, DELETE) from a browser must be same-origin: its
  ``Origin`` (or, without one, its ``Referer``) must be this very host, and it must carry the
  per-process dashboard token (``X-OTA-CSRF``, embedded in the dashboard page). A request with
  neither ``Origin``, ``Referer`` nor ``Sec-Fetch-Site`` is not from a browser (curl, the CLI) and
  needs neither.
- Its body, if any, must be ``application/json``: a form or ``text/plain`` post is 415. HTML forms
  cannot send JSON, so no page can fake one without a CORS preflight, which we never grant.

Refusals are 403 (415 for the media type) with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import json
import secrets
import socket
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.core import jsondoc
from gateway.core.device import still_on
from gateway.core.gates import CONTROLS
from gateway.core.setting_rules import parse_hostport
from gateway.core.settings import Settings
from gateway.core.site import ControlRefused
from gateway.http import dashboard
from gateway.http.context import (
    GATE_CONTROLS,
    GATE_SETTINGS,
    GATES,
    INVENTORY,
    STATS,
    STATUS,
    STORE,
    GateControls,
)
from gateway.http.errors import map_errors
from gateway.inventory.store import Inventory
from gateway.rollout.keeper import GateKeeper
from gateway.runtime.redact import redact_tree
from gateway.runtime.stats import Stats
from gateway.store.artifacts import ArtifactStore
from gateway.telemetry.drift import DriftWatch
from gateway.telemetry.history import WindowHistory

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _presented_token(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError, ValueError):  # ValueError: a non-ASCII value
            return None
    return None


STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSRF_HEADER = "X-OTA-CSRF"
CSRF_TOKEN: web.AppKey[str] = web.AppKey("csrf_token", str)


def _hostname(host: str) -> str:
    """``Host`` header -> lower-case host name without port or IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def host_allowed(host: str, names: Collection[str]) -> bool:
    """An IP literal (nothing to rebind), ``localhost``, or a name this gateway answers to."""
    name = _hostname(host).rstrip(".")
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return name == "localhost" or name.endswith(".localhost") or name in names


def _origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of an Origin or Referer -> its ``host[:port]``; None if opaque."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        return None
    return parts.netloc.lower()


def refusal(
    method: str,
    headers: Mapping[str, str],
    *,
    has_body: bool,
    names: Collection[str],
    csrf_token: str,
) -> tuple[int, str] | None:
    """Whether an operator request is refused, and why; ``None`` lets it through. Pure."""
    host = headers.get("Host")
    if host is not None and not host_allowed(host, names):
        return 403, (
            f"Host {host[:100]!r} is not a name of this gateway (DNS rebinding?); "
            "add it to operator.allowed_hosts if it is"
        )
    if method.upper() not in STATE_CHANGING:
        return None
    origin, referer = headers.get("Origin"), headers.get("Referer")
    browser = origin is not None or referer is not None or "Sec-Fetch-Site" in headers
    if browser:
        source = origin if origin is not None else referer
        claimed = _origin_of(source) if source is not None else None
        if claimed is None or host is None or claimed != host.strip().lower():
            what = (
                "Origin" if origin is not None else ("Referer" if referer is not None else "Sec-Fetch-Site")
            )
            shown = (source or headers.get("Sec-Fetch-Site", ""))[:100]
            return 403, f"cross-origin request refused ({what} {shown!r} is not this gateway)"
        presented = headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(presented.encode(), csrf_token.encode()):
            return (
                403,
                f"a browser request must carry the dashboard's {CSRF_HEADER} token (reload the dashboard)",
            )
    content_type = headers.get("Content-Type")
    if content_type is not None or has_body:
        media = (content_type or "").partition(";")[0].strip().lower()
        if media != "application/json":
            return 415, "a state-changing request takes a body of Content-Type: application/json"
    return None


def guard_middleware(names: Collection[str], csrf_token: str) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        has_body = request.body_exists
        refused = refusal(
            request.method, request.headers, has_body=has_body, names=names, csrf_token=csrf_token
        )
        if refused is not None:
            status, reason = refused
            request.app[STATS].inc(f"operator.refused_{status}")
            cls = web.HTTPForbidden if status == 403 else web.HTTPUnsupportedMediaType
            raise cls(text=reason + "\n")
        return await handler(request)

    return guard


def own_names(listen: str, allowed_hosts: Collection[str]) -> frozenset[str]:
    """The host names a browser may use to reach the operator API."""
    names = {h.lower().rstrip(".") for h in allowed_hosts}
    hostname = socket.gethostname().lower()
    names |= {hostname, hostname + ".local", hostname.partition(".")[0] + ".local"}
    if listen:
        names.add(parse_hostport(listen)[0].lower())
    return frozenset(names)


def token_middleware(token: str) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        presented = _presented_token(request)
        if presented is None or not hmac.compare_digest(presented.encode(), token.encode()):
            raise web.HTTPUnauthorized(
                text="operator token required (Authorization: Bearer <token>)\n",
                headers={"WWW-Authenticate": 'Basic realm="ota-gateway"'},
            )
        return await handler(request)

    return check


async def status(request: web.Request) -> web.Response:
    return web.json_response(redact_tree(request.app[STATUS]()), dumps=lambda v: json.dumps(v, indent=2))


async def gates_status(request: web.Request) -> web.Response:
    gates = request.app[GATES]
    # The audit log is read and parsed in one worker thread, off the loop (not aiofiles: that hops
    # to a thread per read call, and the JSON parsing would still run on the loop).
    audit = await asyncio.to_thread(gates.store.audit)
    inventory = request.app[INVENTORY]
    listed = gates.status()
    for doc in listed:  # "rollback" is the gate's set; "rollback_left" follows the devices' reports
        g = gates.site.gates[doc["deployment"]]
        doc["rollback_left"] = sum(1 for d in g.rollback_set if still_on(inventory.get(d), g.version))
    return web.json_response(
        {
            "gates": listed,
            "index_version": gates.site.index_version,
            "enabled": request.app[GATE_SETTINGS].enabled,
            "audit": audit[-50:],
        }
    )


async def gate_control(request: web.Request) -> web.Response:
    """POST /gates/{deployment}/{hold|release|abort|approve} with {"who": ..., "why": ...}: applied
    at once and logged with both; 409 with the reason when it would do nothing."""
    gates = request.app[GATES]
    action = request.match_info["action"]
    if action not in CONTROLS:
        raise web.HTTPNotFound(text="action: hold, release, abort or approve\n")
    expected = "body: a JSON object with who and why"
    doc = jsondoc.load_object(await request.read(), expected) if request.body_exists else {}
    who, why = str(doc.get("who") or "operator")[:64], str(doc.get("why") or "")[:512]
    if not why:
        raise web.HTTPBadRequest(text="why: say why (it goes in the audit log)\n")
    deployment = request.match_info["deployment"]
    try:
        await request.app[GATE_CONTROLS].control_gate(deployment, action, f"operator:{who}", why)
    except KeyError:
        raise web.HTTPNotFound(text=f"no gate for {deployment} (model@version); see gate status\n") from None
    except ControlRefused as exc:
        raise web.HTTPConflict(text=f"{exc}\n") from None
    gate = next(g for g in gates.status() if g["deployment"] == deployment)
    return web.json_response({"gate": gate, "gates": gates.status()})


async def devices(request: web.Request) -> web.Response:
    return web.json_response(request.app[INVENTORY].to_json())


async def cache_verify(request: web.Request) -> web.Response:
    store = request.app[STORE]
    results = {sha: await store.scrubber.recheck(sha) for sha in list(store.verified)}
    return web.json_response(
        {"checked": len(results), "corrupt_removed": [s for s, ok in results.items() if not ok]}
    )


async def cache_prune(request: web.Request) -> web.Response:
    store = request.app[STORE]
    before = set(store.verified)
    await store.evictor.prune_unprotected()
    return web.json_response({"removed": sorted(before - set(store.verified))})


def build_operator_app(
    settings: Settings,
    *,
    stats: Stats,
    inventory: Inventory,
    store: ArtifactStore,
    gates: GateKeeper,
    controls: GateControls,
    status_view: Callable[[], dict[str, Any]],
    history: WindowHistory | None = None,
    drift: DriftWatch | None = None,
) -> web.Application:
    op = settings.operator
    csrf_token = secrets.token_urlsafe(24)  # per process: a page from before a restart must reload
    middlewares = [guard_middleware(own_names(op.listen, op.allowed_hosts), csrf_token)]
    if op.token:
        middlewares.append(token_middleware(op.token))
    app = web.Application(middlewares=[*middlewares, map_errors], client_max_size=64 << 10)
    app[STATS] = stats
    app[INVENTORY] = inventory
    app[STORE] = store
    app[GATES] = gates
    app[GATE_SETTINGS] = settings.gates
    app[GATE_CONTROLS] = controls
    app[STATUS] = status_view
    app[CSRF_TOKEN] = csrf_token
    board = dashboard.Dashboard(
        dashboard.Assets.load(csrf_token),  # package data, read once here (start-up), served from memory
        settings,
        status=status_view,
        gates=gates,
        inventory=inventory,
        history=history if history is not None else WindowHistory(),
        drift=drift,
    )
    dashboard.add_routes(app, board)
    app.router.add_get("/status", status)
    app.router.add_get("/devices", devices)
    app.router.add_get("/gates", gates_status)
    app.router.add_post("/gates/{deployment}/{action}", gate_control)
    app.router.add_post("/cache/verify", cache_verify)
    app.router.add_post("/cache/prune", cache_prune)
    return app
