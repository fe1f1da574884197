"""The operator API and dashboard: status, cache maintenance, (later) gate controls.

Bound to loopback by default; anywhere else it requires ``operator.token``, sent as
``Authorization: Bearer <token>`` or as the password of HTTP Basic (so a browser can open the
dashboard). Token comparison is constant-time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.http.context import GATEWAY, gateway_of

if TYPE_CHECKING:
    from gateway.service import Gateway

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
    return web.json_response(gateway_of(request).status(), dumps=lambda v: json.dumps(v, indent=2))


async def gates_status(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    return web.json_response({"gates": gw.gates.status(), "audit": gw.gates.store.audit()[-50:]})


async def gate_control(request: web.Request) -> web.Response:
    """POST /gates/{deployment}/{hold|release|abort} with {"who": ..., "why": ...}: logged with both."""
    gw = gateway_of(request)
    action = request.match_info["action"]
    if action not in ("hold", "release", "abort"):
        raise web.HTTPNotFound(text="action: hold, release or abort\n")
    try:
        doc = await request.json() if request.can_read_body else {}
    except ValueError:
        raise web.HTTPBadRequest(text="body: a JSON object with who and why\n") from None
    if not isinstance(doc, dict):  # valid JSON, but a list or a string: no who or why in it
        raise web.HTTPBadRequest(text="body: a JSON object with who and why\n")
    who, why = str(doc.get("who") or "operator")[:64], str(doc.get("why") or "")[:512]
    if not why:
        raise web.HTTPBadRequest(text="why: say why (it goes in the audit log)\n")
    try:
        gw.gates.control(request.match_info["deployment"], action, f"operator:{who}", why)
    except KeyError:
        raise web.HTTPNotFound(text="no gate for that deployment (model@version)\n") from None
    await gw.step_gates(gw.clock())
    return web.json_response({"gates": gw.gates.status()})


async def devices(request: web.Request) -> web.Response:
    return web.json_response(gateway_of(request).inventory.to_json())


async def cache_verify(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    results = {sha: await gw.store.recheck(sha) for sha in list(gw.store.verified)}
    return web.json_response(
        {"checked": len(results), "corrupt_removed": [s for s, ok in results.items() if not ok]}
    )


async def cache_prune(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    before = set(gw.store.verified)
    await gw.store.prune_unprotected()
    return web.json_response({"removed": sorted(before - set(gw.store.verified))})


def _row(cells: list[object]) -> str:
    return "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>"


async def dashboard(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    st = gw.status()
    idx = st["index"] or {}
    deployments = "".join(
        _row(
            [
                d["model_id"],
                d["version"],
                d["target_cohort"] or "everyone",
                f"{d['rollout_percentage']:g}%",
                "yes" if d["mirrored"] else f"fetching ({d['progress_bytes'] or 0} of {d['length']} bytes)",
            ]
        )
        for d in st["deployments"]
    )
    gates = "".join(
        _row(
            [
                g["deployment"],
                g["baseline"] or "-",
                g["stage"] + (f" (held by {g['held_by']})" if g["held_by"] else ""),
                g["wave"],
                g["admitted"],
                g["rollback"],
                (g["last_decision"] or {}).get("reason", ""),
            ]
        )
        for g in st["gates"]
    )
    health = st["health"]
    counters = "".join(_row([k, v]) for k, v in st["counters"].items())
    errors = "".join(_row([k, v]) for k, v in st["last_errors"].items())
    clock = "ok" if st["clock"]["trusted"] else "WRONG: " + st["clock"]["note"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<title>OTA Gateway {html.escape(st["gateway"]["site"])}</title>
<style>body{{font:14px sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1.5em}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}</style></head><body>
<h1>OTA Gateway: site {html.escape(st["gateway"]["site"])}</h1>
<p>version {html.escape(st["gateway"]["version"])}, up {st["gateway"]["uptime_s"]} s, clock {html.escape(clock)}</p>
<h2>Upstream</h2><p>{html.escape(str(st["upstream"]["url"]))}; last error: {html.escape(str(st["upstream"]["last_error"]))}</p>
<h2>Signed index</h2><p>version {html.escape(str(idx.get("version")))}, expired: {html.escape(str(idx.get("expired")))}</p>
<h2>Deployments</h2><table><tr><th>model</th><th>version</th><th>cohort</th><th>share</th><th>mirrored</th></tr>{deployments}</table>
<h2>Canary gates</h2><table><tr><th>deployment</th><th>baseline</th><th>stage</th><th>wave</th><th>admitted</th><th>rollback</th><th>last decision</th></tr>{gates}</table>
<h2>This box</h2><p>CPU {html.escape(str(health.get("system_cpu_percent")))} %, RAM {html.escape(str(health.get("ram_percent")))} %,
disk free {html.escape(str(health.get("disk_free_bytes")))} bytes, temperature {html.escape(str(health.get("temperature_c")))} C,
MQTT connections {html.escape(str(st["mqtt"].get("connections")))}, devices known {len(gw.inventory.devices)}</p>
<h2>Counters</h2><table>{counters}</table><h2>Last errors</h2><table>{errors}</table>
</body></html>"""
    return web.Response(text=page, content_type="text/html")


def build_operator_app(gw: Gateway) -> web.Application:
    middlewares = [token_middleware(gw.settings.operator.token)] if gw.settings.operator.token else []
    app = web.Application(middlewares=middlewares, client_max_size=64 << 10)
    app[GATEWAY] = gw
    app.router.add_get("/", dashboard)
    app.router.add_get("/status", status)
    app.router.add_get("/devices", devices)
    app.router.add_get("/gates", gates_status)
    app.router.add_post("/gates/{deployment}/{action}", gate_control)
    app.router.add_post("/cache/verify", cache_verify)
    app.router.add_post("/cache/prune", cache_prune)
    return app
