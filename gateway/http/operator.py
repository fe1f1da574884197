"""The operator API and dashboard: status, cache maintenance, gate controls.

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
import html
import ipaddress
import json
import secrets
import socket
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from gateway.core import jsondoc
from gateway.core.errors import FormatError
from gateway.core.gates import CONTROLS
from gateway.core.settings import parse_hostport
from gateway.core.site import ControlRefused
from gateway.http.context import GATEWAY, gateway_of
from gateway.redact import redact_tree

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
            gateway_of(request).stats.inc(f"operator.refused_{status}")
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
    return web.json_response(
        redact_tree(gateway_of(request).status()), dumps=lambda v: json.dumps(v, indent=2)
    )


async def gates_status(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    # The audit log is read and parsed in one worker thread, off the loop (not aiofiles: that hops
    # to a thread per read call, and the JSON parsing would still run on the loop).
    audit = await asyncio.to_thread(gw.gates.store.audit)
    return web.json_response(
        {
            "gates": gw.gates.status(),
            "index_version": gw.gates.site.index_version,
            "enabled": gw.settings.gates.enabled,
            "audit": audit[-50:],
        }
    )


async def gate_control(request: web.Request) -> web.Response:
    """POST /gates/{deployment}/{hold|release|abort|approve} with {"who": ..., "why": ...}: applied
    at once and logged with both; 409 with the reason when it would do nothing."""
    gw = gateway_of(request)
    action = request.match_info["action"]
    if action not in CONTROLS:
        raise web.HTTPNotFound(text="action: hold, release, abort or approve\n")
    try:
        doc = jsondoc.loads(await request.read()) if request.body_exists else {}
    except FormatError as exc:
        raise web.HTTPBadRequest(text=f"body: a JSON object with who and why ({exc})\n") from None
    if not isinstance(doc, dict):
        raise web.HTTPBadRequest(text="body: a JSON object with who and why\n")
    who, why = str(doc.get("who") or "operator")[:64], str(doc.get("why") or "")[:512]
    if not why:
        raise web.HTTPBadRequest(text="why: say why (it goes in the audit log)\n")
    deployment = request.match_info["deployment"]
    try:
        await gw.control_gate(deployment, action, f"operator:{who}", why)
    except KeyError:
        raise web.HTTPNotFound(text=f"no gate for {deployment} (model@version); see gate status\n") from None
    except ControlRefused as exc:
        raise web.HTTPConflict(text=f"{exc}\n") from None
    gate = next(g for g in gw.gates.status() if g["deployment"] == deployment)
    return web.json_response({"gate": gate, "gates": gw.gates.status()})


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
    st = redact_tree(gw.status())
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
                g["stage"]
                + (f" (held by {g['held_by']})" if g["held_by"] else "")
                + (" (waiting for approval)" if g.get("awaiting_approval") else ""),
                g["wave"],
                g["admitted"],
                g["rollback"],
                (g["last_decision"] or {}).get("reason", ""),
            ]
        )[: -len("</tr>")]
        + "<td>"
        + "".join(
            f'<button data-gate="{html.escape(g["deployment"])}" data-action="{a}">{a}</button>'
            for a in ("hold", "release", *(("approve",) if g.get("awaiting_approval") else ()), "abort")
        )
        + "</td></tr>"
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
<h2>Canary gates</h2><table><tr><th>deployment</th><th>baseline</th><th>stage</th><th>wave</th><th>admitted</th><th>rollback</th><th>last decision</th><th></th></tr>{gates}</table>
<h2>This box</h2><p>CPU {html.escape(str(health.get("system_cpu_percent")))} %, RAM {html.escape(str(health.get("ram_percent")))} %,
disk free {html.escape(str(health.get("disk_free_bytes")))} bytes, temperature {html.escape(str(health.get("temperature_c")))} C,
MQTT connections {html.escape(str(st["mqtt"].get("connections")))}, devices known {len(gw.inventory.devices)}</p>
<h2>Counters</h2><table>{counters}</table><h2>Last errors</h2><table>{errors}</table>
<script>
// Gate controls: same-origin JSON with this process's token (see gateway.http.operator.refusal).
const csrf = {json.dumps(request.app[CSRF_TOKEN])};
document.querySelectorAll("button[data-gate]").forEach((b) => b.addEventListener("click", async () => {{
  const why = prompt(b.dataset.action + " " + b.dataset.gate + ": why? (goes in the audit log)");
  if (!why) return;
  if (b.dataset.action === "abort" && !confirm("Abort " + b.dataset.gate + " for good? Its devices roll back.")) return;
  const r = await fetch("gates/" + encodeURIComponent(b.dataset.gate) + "/" + b.dataset.action, {{
    method: "POST", headers: {{"Content-Type": "application/json", "X-OTA-CSRF": csrf}},
    body: JSON.stringify({{who: "dashboard", why: why}})}});
  alert(r.ok ? "done" : r.status + " " + await r.text());
  location.reload();
}}));
</script>
</body></html>"""
    return web.Response(text=page, content_type="text/html")


def build_operator_app(gw: Gateway) -> web.Application:
    op = gw.settings.operator
    csrf_token = secrets.token_urlsafe(24)  # per process: a page from before a restart must reload
    middlewares = [guard_middleware(own_names(op.listen, op.allowed_hosts), csrf_token)]
    if op.token:
        middlewares.append(token_middleware(op.token))
    app = web.Application(middlewares=middlewares, client_max_size=64 << 10)
    app[GATEWAY] = gw
    app[CSRF_TOKEN] = csrf_token
    app.router.add_get("/", dashboard)
    app.router.add_get("/status", status)
    app.router.add_get("/devices", devices)
    app.router.add_get("/gates", gates_status)
    app.router.add_post("/gates/{deployment}/{action}", gate_control)
    app.router.add_post("/cache/verify", cache_verify)
    app.router.add_post("/cache/prune", cache_prune)
    return app
