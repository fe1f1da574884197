"""The device API: update polls (with long poll), events and metrics, answered from memory.

``GET /devices/{id}/updates`` answers 200 with the manifest this device may install (the cloud's
fields untouched, its ``artifact_url``/``signature_url`` pointing here), 204 when there is none
(``X-OTA-Reason`` says why), 304 when ``If-None-Match`` matches. Every answer carries a jittered
``Retry-After`` so a site that lost power does not come back as one herd. ``?wait=SECONDS`` holds
the request until the answer for *this* device changes, or the wait ends.

No device request ever causes an upstream request: the answer comes from the index the mirror
holds, the inventory and the gates, all in memory. Bad input gets a 400 naming the problem;
access failures 401/403 with the reason.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import random
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.access import peer_cn
from gateway.core import jsondoc
from gateway.core.errors import FormatError, StorageError
from gateway.core.events import parse_event
from gateway.core.manifest import valid_id
from gateway.core.pacing import jittered
from gateway.http.context import (
    CHANGES,
    CLOCK,
    CREDENTIALS,
    DEVICE_SETTINGS,
    HTTP_SETTINGS,
    INGEST,
    INVENTORY,
    POLL_QUERIES,
    POLLS,
    STATS,
)

log = logging.getLogger(__name__)

MAX_QUERY_PARAMS = 32
MAX_POLL_QUERIES = 4096  # distinct query strings remembered
MAX_REMEMBERED_QUERY_CHARS = 512
MAX_VALUE_CHARS = 128
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}\Z")  # \Z: "$" would allow a final newline
RESERVED = {"wait"}
STORAGE_RETRY_AFTER_S = 60
# Metrics and events are answered 200 with a small body, not 204: the reference HTTP emitter
# counts only a 200 as a successful send.
ACCEPTED = {"accepted": 1}


def bad_request(reason: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=reason + "\n")


def device_id_of(request: web.Request) -> str:
    device_id = request.match_info["device_id"]
    if not valid_id(device_id):
        raise bad_request("device id: letters, digits, '.', '_' or '-', at most 128, not starting with '.'")
    return device_id


def authorize(request: web.Request, device_id: str, *, write: bool) -> bool:
    """401/403 unless this request may speak for ``device_id``; True when it may also change what
    the gateway records about the device.

    In ``open`` mode the id is held to the address it first used: a write (metrics, events) from
    another address is refused; a poll from another address is answered (read only: False) but
    neither records its attributes, nor binds, nor keeps the binding alive.
    """
    creds, stats = request.app[CREDENTIALS], request.app[STATS]
    refusal = creds.check(device_id, bearer=bearer_of(request), cert_cn=cert_cn_of(request))
    owner = True
    if refusal is None and creds.mode == "open":
        refusal = creds.bindings.seen(device_id, request.remote, request.app[CLOCK]())
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
    """Downloads: any valid device credential (model files are company property)."""
    refusal = request.app[CREDENTIALS].check_any(bearer=bearer_of(request), cert_cn=cert_cn_of(request))
    if refusal is not None:
        request.app[STATS].inc(f"downloads.refused_{refusal.status}")
        cls = web.HTTPUnauthorized if refusal.status == 401 else web.HTTPForbidden
        raise cls(text=refusal.reason + "\n")


def bearer_of(request: web.Request) -> str | None:
    """The device token: ``Authorization: Bearer <token>``, or the password of HTTP Basic (what an
    HTTP client sends for a ``http://user:token@host/`` URL, e.g. a child gateway's upstream)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "basic" and value:
        try:
            value = base64.b64decode(value, validate=True).decode().partition(":")[2]
        except (binascii.Error, ValueError):  # ValueError (and UnicodeDecodeError): not ASCII base64
            return None
        return value or None
    return value if scheme.lower() == "bearer" and value else None


def cert_cn_of(request: web.Request) -> str | None:
    transport = request.transport
    return peer_cn(transport.get_extra_info("ssl_object") if transport is not None else None)


def poll_attributes(query: Mapping[str, str]) -> dict[str, str]:
    """Query parameters -> device attributes; 400 on anything odd or unbounded."""
    if len(query) > MAX_QUERY_PARAMS:
        raise bad_request(f"at most {MAX_QUERY_PARAMS} query parameters")
    attrs: dict[str, str] = {}
    for key, value in query.items():
        if key in RESERVED:
            continue
        if not _KEY.match(key):
            raise bad_request(f"query parameter {key[:40]!r}: a name of letters, digits, '_', '.', '-'")
        if len(value) > MAX_VALUE_CHARS or not value.isprintable():
            raise bad_request(
                f"query parameter {key}: a printable value of at most {MAX_VALUE_CHARS} characters"
            )
        if key in attrs:
            raise bad_request(f"query parameter {key}: given twice")
        attrs[key] = value
    for key in ("model_id", "model_version"):
        if key in attrs and not valid_id(attrs[key]):
            raise bad_request(f"query parameter {key}: letters, digits, '.', '_' or '-'")
    return attrs


def poll_query(request: web.Request, max_wait_s: float) -> tuple[dict[str, str], float]:
    """The poll's attributes (read only: shared by every poll with the same query string) and its
    wait, parsed once per distinct query string (a site sends a few: the same firmware and model)."""
    memo = request.app[POLL_QUERIES]
    raw = request.query_string
    if (hit := memo.get(raw)) is not None:
        return hit
    parsed = poll_attributes(request.query), wait_of(request, max_wait_s)  # 400 on anything odd
    if len(raw) <= MAX_REMEMBERED_QUERY_CHARS:  # a hostile client's long strings are not kept
        if len(memo) >= MAX_POLL_QUERIES:
            memo.clear()
        memo[raw] = parsed
    return parsed


def wait_of(request: web.Request, max_wait_s: float) -> float:
    raw = request.query.get("wait")
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise bad_request("wait: a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise bad_request("wait: a number of seconds of at least 0")
    return min(value, max_wait_s)


def base_url(request: web.Request) -> str:
    public_url = request.app[HTTP_SETTINGS].public_url
    if public_url:
        return public_url.rstrip("/")
    return f"{request.scheme}://{request.host}"


def _etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == etag for t in header.split(","))


async def poll(request: web.Request) -> web.Response:
    app = request.app
    stats, clock, inventory, polls = app[STATS], app[CLOCK], app[INVENTORY], app[POLLS]
    settings = app[DEVICE_SETTINGS]
    device_id = device_id_of(request)
    owner = authorize(request, device_id, write=False)
    attrs, wait_s = poll_query(request, settings.max_wait_s)
    stats.inc("devices.polls")
    if owner:  # a poll from another address than the id's own (open access) records nothing
        inventory.upsert(device_id, attrs, source="poll", now=clock())
    if_none_match = request.headers.get("If-None-Match")
    base = base_url(request)
    answer = polls.answer_for(device_id)
    rendered = polls.render(answer, base)
    if wait_s > 0 and (rendered is None or _etag_matches(if_none_match, rendered[1])):
        # Long poll: nothing new for this device yet; wait until its answer changes.
        held = rendered[1] if rendered else None
        deadline = clock() + wait_s
        while (remaining := deadline - clock()) > 0:
            await app[CHANGES].wait(remaining)
            answer = polls.answer_for(device_id)
            rendered = polls.render(answer, base)
            if (rendered[1] if rendered else None) != held:
                break
    if owner:
        inventory.set_blocked(device_id, answer.blocked_by_firmware, clock())
    headers = {
        "Retry-After": str(
            max(
                1,
                round(jittered(settings.poll_interval_s, settings.poll_jitter, random.random())),
            )
        ),
        "Cache-Control": "no-store",
        "X-OTA-Reason": answer.reason,
    }
    if answer.blocked_by_firmware:
        headers["X-OTA-Blocked-By-Firmware"] = answer.blocked_by_firmware
    if rendered is None:
        stats.count("devices.poll_answers", answer="204", reason=answer.reason)
        return web.Response(status=204, headers=headers)
    raw, etag = rendered
    headers["ETag"] = etag
    if _etag_matches(if_none_match, etag):
        stats.count("devices.poll_answers", answer="304", reason=answer.reason)
        return web.Response(status=304, headers=headers)
    stats.count("devices.poll_answers", answer="200", reason=answer.reason)
    return web.Response(body=raw, status=200, content_type="application/json", headers=headers)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > request.app._client_max_size:
        raise web.HTTPRequestEntityTooLarge(
            max_size=request.app._client_max_size, actual_size=request.content_length, text="body too large\n"
        )
    try:
        doc = jsondoc.loads(await request.read())
    except FormatError as exc:
        raise bad_request(f"body: expected a JSON object ({exc})") from None
    if not isinstance(doc, dict):
        raise bad_request("body: expected a JSON object")
    return doc


async def event(request: web.Request) -> web.Response:
    device_id = device_id_of(request)
    authorize(request, device_id, write=True)
    doc = await _json_body(request)
    try:
        name, model_id, version, reason = parse_event(doc)
    except FormatError as exc:
        raise bad_request(str(exc)) from None
    request.app[STATS].inc(f"devices.events.{name}")
    request.app[INGEST].on_event(device_id, name, model_id, version, reason)
    return web.json_response(ACCEPTED)


async def metrics(request: web.Request) -> web.Response:
    """The reference metrics JSON over HTTP: 200 ``{"accepted": 1}`` once it is durable in the outbox."""
    device_id = device_id_of(request)
    authorize(request, device_id, write=True)
    doc = await _json_body(request)
    try:
        await request.app[INGEST].metrics(device_id, doc, request.app[CLOCK]())
    except FormatError as exc:
        raise bad_request(str(exc)) from None
    except StorageError as exc:
        # The outbox could not make it durable (disk full, read-only): not the device's fault and
        # not a crash; it should send it again later.
        request.app[STATS].error("devices.metrics_unavailable", str(exc))
        raise web.HTTPServiceUnavailable(
            text=f"cannot store metrics now ({exc}); retry later\n",
            headers={"Retry-After": str(STORAGE_RETRY_AFTER_S)},
        ) from None
    return web.json_response(ACCEPTED)
