"""The device API's credentials, and its writes: events and metrics.

Who may speak for a device id (:func:`authorize`, :func:`authorize_any` for downloads), read from
``Authorization`` or the TLS client certificate as the site's access mode says; device events and
metrics over HTTP. The update poll is :mod:`gateway.http.polling`. Bad input gets a 400 naming the
problem (a :class:`FormatError`, answered by :mod:`gateway.http.errors`); access failures 401/403
with the reason.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any

from aiohttp import web

from gateway.core import jsondoc
from gateway.core.errors import StorageError
from gateway.core.events import DeviceEvent, parse_event
from gateway.core.manifest import valid_id
from gateway.http.context import CHILDREN, CLOCK, CREDENTIALS, INGEST, STATS
from gateway.http.errors import storage_unavailable
from gateway.inventory.access import Credentials, peer_cn
from gateway.runtime.stats import Stats

log = logging.getLogger(__name__)

# Metrics and events are answered 200 with a small body, not 204: the reference HTTP emitter
# counts only a 200 as a successful send.
ACCEPTED = {"accepted": 1}
_TOKEN_SCHEMES = ("bearer", "targettoken", "gatewaytoken")


def bad_request(reason: str) -> web.HTTPBadRequest:
    """A handler's own refusal of a path, query or header (what the error tree does not carry)."""
    return web.HTTPBadRequest(text=reason + "\n")


def device_id_of(request: web.Request) -> str:
    device_id = request.match_info["device_id"]
    if not valid_id(device_id):
        raise bad_request("device id: letters, digits, '.', '_' or '-', at most 128, not starting with '.'")
    return device_id


def authorize(request: web.Request, device_id: str, *, write: bool) -> bool:
    """401/403 unless this request may speak for ``device_id``; True when it may also change what
    the gateway records about the device (see :func:`admit`)."""
    app = request.app
    return admit(app[CREDENTIALS], app[STATS], app[CLOCK](), request, device_id, write)


def admit(
    creds: Credentials,
    stats: Stats,
    now: float,
    request: web.Request,
    device_id: str,
    write: bool,
) -> bool:
    """:func:`authorize` with what it reads passed in (the poll handler holds them).

    In ``open`` mode the id is held to the address it first used: a write (metrics, events) from
    another address is refused; a poll from another address is answered (read only: False) but
    neither records its attributes, nor binds, nor keeps the binding alive.
    """
    # Each mode reads one credential (``check`` ignores the others): a poll parses no header and
    # asks the transport nothing it does not need.
    mode = creds.mode
    bearer = None if mode in ("open", "mtls") else bearer_of(request)
    cert_cn = cert_cn_of(request) if mode == "mtls" else None
    refusal = creds.check(device_id, bearer=bearer, cert_cn=cert_cn)
    owner = True
    if refusal is None and mode == "open":
        refusal = creds.bindings.seen(device_id, request.remote, now)
        if refusal is not None:
            if not write:
                refusal, owner = None, False
            else:
                stats.inc("devices.refused_open_binding")
    if refusal is not None:
        stats.inc(f"devices.refused_{refusal.status}")
        cls = web.HTTPUnauthorized if refusal.status == 401 else web.HTTPForbidden
        raise cls(text=refusal.reason + "\n")
    return owner


async def authorize_any(request: web.Request) -> None:
    """Downloads: any valid device credential, or a child gateway's (model files are company property)."""
    bearer, cert_cn = bearer_of(request), cert_cn_of(request)
    refusal = request.app[CREDENTIALS].check_any(bearer=bearer, cert_cn=cert_cn)
    if refusal is not None and request.app[CHILDREN].site_of(bearer=bearer, cert_cn=cert_cn) is not None:
        return  # a child gateway's own credential reads what a device may read
    if refusal is not None:
        request.app[STATS].inc(f"downloads.refused_{refusal.status}")
        cls = web.HTTPUnauthorized if refusal.status == 401 else web.HTTPForbidden
        raise cls(text=refusal.reason + "\n")


def bearer_of(request: web.Request) -> str | None:
    """The device token: ``Authorization: Bearer <token>``, or the password of HTTP Basic (what an
    HTTP client sends for a ``http://user:token@host/`` URL, e.g. a child gateway's upstream), or
    hawkBit DDI's ``TargetToken``/``GatewayToken`` (the device's own token, the site token)."""
    return bearer_from(request.headers.get("Authorization", ""))


def bearer_from(authorization: str) -> str | None:
    """:func:`bearer_of` for an ``Authorization`` value (the fast download path parses its own heads)."""
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "basic" and value:
        try:
            value = base64.b64decode(value, validate=True).decode().partition(":")[2]
        except (binascii.Error, ValueError):  # ValueError (and UnicodeDecodeError): not ASCII base64
            return None
        return value or None
    return value if scheme.lower() in _TOKEN_SCHEMES and value else None


def cert_cn_of(request: web.Request) -> str | None:
    transport = request.transport
    return peer_cn(transport.get_extra_info("ssl_object") if transport is not None else None)


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > request.app._client_max_size:
        raise web.HTTPRequestEntityTooLarge(
            max_size=request.app._client_max_size, actual_size=request.content_length, text="body too large\n"
        )
    return jsondoc.load_object(await request.read(), "body: expected a JSON object")


async def event(request: web.Request) -> web.Response:
    device_id = device_id_of(request)
    authorize(request, device_id, write=True)
    doc = await json_body(request)
    name, model_id, version, reason = parse_event(doc)
    request.app[STATS].inc(f"devices.events.{name}")
    request.app[INGEST].on_event(DeviceEvent(device_id, name, model_id, version, reason))
    return web.json_response(ACCEPTED)


async def metrics(request: web.Request) -> web.Response:
    """The reference metrics JSON over HTTP: 200 ``{"accepted": 1}`` once it is durable in the outbox."""
    device_id = device_id_of(request)
    authorize(request, device_id, write=True)
    doc = await json_body(request)
    try:
        await request.app[INGEST].metrics(device_id, doc, request.app[CLOCK]())
    except StorageError as exc:  # the outbox could not make it durable
        raise storage_unavailable(request, "devices.metrics_unavailable", "store metrics", exc) from None
    return web.json_response(ACCEPTED)
