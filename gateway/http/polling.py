"""``GET /devices/{id}/updates``: the update poll, with long poll, answered from memory.

It answers 200 with the manifest this device may install (the cloud's fields untouched, its
``artifact_url``/``signature_url`` pointing here), 204 when there is none (``X-OTA-Reason`` says
why), 304 when ``If-None-Match`` matches. Every answer carries a jittered ``Retry-After`` so a site
that lost power does not come back as one herd. ``?wait=SECONDS`` holds the request until the answer
for *this* device changes, or the wait ends. No poll ever causes an upstream request.

The handler, :func:`poll`, reads what it uses from the app's typed keys (:mod:`gateway.http.context`),
as every handler does. A site's thousands of devices send the same few questions and get the same
few answers, so :class:`PollReplies` (under :data:`POLL_REPLIES`) keeps, besides the answers
themselves (:class:`gateway.rollout.polls.PollAnswers`), what turns them into HTTP: each distinct query string parsed once, each device id checked once
(and held as one string object), and each answer's body, ETag and header sets built once per base
URL (the poll memo gives equal answers as one object, so that is one lookup by identity). What it
still does on every poll is what must be fresh: the credential check, the inventory's
``last_seen``, the answer's inputs, and the random ``Retry-After`` (drawn from a table of the
jitter's quantiles).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from random import getrandbits

from aiohttp import web
from multidict import CIMultiDict

from gateway.core.manifest import valid_id
from gateway.core.pacing import jittered_seconds_table
from gateway.core.policy import PollAnswer
from gateway.core.settings import DeviceSettings, HttpSettings
from gateway.http.context import CHANGES, CLOCK, CREDENTIALS, INVENTORY, POLLS, STATS
from gateway.http.devices import admit, bad_request, device_id_of
from gateway.inventory.store import Inventory
from gateway.rollout.polls import PollAnswers
from gateway.runtime.stats import Stats

MAX_QUERY_PARAMS = 32
MAX_POLL_QUERIES = 4096  # distinct query strings remembered
MAX_REMEMBERED_QUERY_CHARS = 512
MAX_VALUE_CHARS = 128
MAX_REPLIES = 1024  # distinct (answer, base URL) remembered as HTTP
MAX_RETRY_SETS = 128  # of each, the Retry-After values remembered
MAX_BASES = 64  # distinct Host values remembered
MAX_IDS = 200_000  # device ids already checked (a full site)
RETRY_BITS = 12  # Retry-After drawn from 4096 quantiles of the jitter
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}\Z")  # \Z: "$" would allow a final newline
RESERVED = {"wait"}


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


def wait_of(query: Mapping[str, str], max_wait_s: float) -> float:
    raw = query.get("wait")
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        raise bad_request("wait: a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise bad_request("wait: a number of seconds of at least 0")
    return min(value, max_wait_s)


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == etag for t in header.split(","))


class _HeaderSets:
    """One answer's response headers for one status, one set per ``Retry-After`` value (a few
    dozen: the poll interval's jitter in whole seconds)."""

    __slots__ = ("base", "by_retry", "counter")

    def __init__(self, answer: PollAnswer, status: str, etag: str | None) -> None:
        base = {"Cache-Control": "no-store", "X-OTA-Reason": answer.reason}
        if answer.blocked_by_firmware:
            base["X-OTA-Blocked-By-Firmware"] = answer.blocked_by_firmware
        if etag is not None:
            base["ETag"] = etag
        if status == "200":
            base["Content-Type"] = "application/json"
        self.base = base
        self.counter = Stats.key("devices.poll_answers", answer=status, reason=answer.reason)
        self.by_retry: dict[int, CIMultiDict[str]] = {}

    def with_retry_after(self, seconds: int) -> CIMultiDict[str]:
        if (headers := self.by_retry.get(seconds)) is None:
            headers = CIMultiDict({"Retry-After": str(seconds), **self.base})
            if len(self.by_retry) < MAX_RETRY_SETS:  # a long interval with a wide jitter: not all kept
                self.by_retry[seconds] = headers
        return headers


class _Reply:
    """One answer as HTTP under one base URL: the manifest body and its ETag (both None: a 204),
    and the header sets of each status it can go out with."""

    __slots__ = ("answer", "etag", "fresh", "not_modified", "raw")

    def __init__(self, answer: PollAnswer, rendered: tuple[bytes, str] | None) -> None:
        self.answer = answer  # held: its id() in the key is not reused while cached
        self.raw: bytes | None = rendered[0] if rendered else None
        self.etag: str | None = rendered[1] if rendered else None
        self.fresh = _HeaderSets(answer, "200" if rendered else "204", self.etag)
        self.not_modified = _HeaderSets(answer, "304", self.etag) if rendered else self.fresh


class PollReplies:
    """What turns poll answers into HTTP, remembered (bounded): made from settings values, it holds
    no service object; the handler passes in what a step needs."""

    def __init__(self, devices: DeviceSettings, http: HttpSettings) -> None:
        self.settings = devices
        self.public_url = http.public_url.rstrip("/") if http.public_url else ""
        # The device API is served over TLS exactly when it has a certificate (gateway.service.wiring).
        self.scheme = "https" if http.tls_cert else "http"
        self.retry_s = jittered_seconds_table(devices.poll_interval_s, devices.poll_jitter, RETRY_BITS)
        self._queries: dict[str, tuple[dict[str, str], float]] = {}
        self._replies: dict[tuple[int, str], _Reply] = {}
        self._bases: dict[str | None, str] = {}
        self._ids: dict[str, str] = {}  # each valid device id seen, to its one string object

    def device_id(self, request: web.Request, inventory: Inventory) -> str:
        """The path's device id, checked once per id, and always the same string object for the
        same id: the one the inventory holds when it has the device. Every table a poll reads is
        keyed by device id (bindings, inventory, poll memo); with one object per id, a lookup that
        finds its slot compares by identity and never reads the characters again."""
        raw: str = request.match_info["device_id"]
        if (device_id := self._ids.get(raw)) is None:
            device_id_of(request)  # 400 on a bad one
            rec = inventory.devices.get(raw)
            device_id = rec.device_id if rec is not None else raw
            if len(self._ids) >= MAX_IDS:
                self._ids.clear()
            self._ids[device_id] = device_id
        return device_id

    def base_url(self, request: web.Request) -> str:
        """Where the manifest's URLs point: ``http.public_url``, else the address the device used
        (its ``Host``), one string per distinct ``Host``."""
        if self.public_url:
            return self.public_url
        host = request.headers.get("Host")
        if (base := self._bases.get(host)) is None:
            base = f"{self.scheme}://{request.host}"
            if len(self._bases) >= MAX_BASES:  # a client sending many Host values: not all kept
                self._bases.clear()
            self._bases[host] = base
        return base

    def query(self, request: web.Request) -> tuple[dict[str, str], float]:
        """The poll's attributes (read only: shared by every poll with the same query string) and
        its wait, parsed once per distinct query string (a site sends a few: the same firmware and
        model)."""
        raw = request.query_string
        if (hit := self._queries.get(raw)) is not None:
            return hit
        query = request.query
        parsed = poll_attributes(query), wait_of(query, self.settings.max_wait_s)  # 400 on anything odd
        if len(raw) <= MAX_REMEMBERED_QUERY_CHARS:  # a hostile client's long strings are not kept
            if len(self._queries) >= MAX_POLL_QUERIES:
                self._queries.clear()
            self._queries[raw] = parsed
        return parsed

    def reply(self, polls: PollAnswers, answer: PollAnswer, base: str) -> _Reply:
        """The answer's body, ETag and header sets, built once per answer and base URL (the poll
        memo gives every device with an equal answer the same object)."""
        key = (id(answer), base)
        if (hit := self._replies.get(key)) is not None and hit.answer is answer:
            return hit
        if len(self._replies) >= MAX_REPLIES:
            self._replies.clear()
        reply = self._replies[key] = _Reply(answer, polls.render(answer, base))
        return reply

    def respond(self, stats: Stats, reply: _Reply, if_none_match: str | None) -> web.Response:
        """200 with the manifest, 304 when the device has it, 204 when there is none; counted, and
        a ``Retry-After`` drawn from the poll interval's jitter."""
        raw = reply.raw
        if reply.etag is not None and etag_matches(if_none_match, reply.etag):
            sets, status = reply.not_modified, 304
        else:
            sets, status = reply.fresh, 200 if raw is not None else 204
        stats.bump(sets.counter)
        headers = sets.with_retry_after(self.retry_s[getrandbits(RETRY_BITS)])
        return web.Response(status=status, body=raw if status == 200 else None, headers=headers)


POLL_REPLIES: web.AppKey[PollReplies] = web.AppKey("poll_replies", PollReplies)


async def poll(request: web.Request) -> web.Response:
    """``GET /devices/{device_id}/updates``."""
    app = request.app
    replies, inventory, polls, stats, clock = (
        app[POLL_REPLIES],
        app[INVENTORY],
        app[POLLS],
        app[STATS],
        app[CLOCK],
    )
    device_id = replies.device_id(request, inventory)
    now = clock()
    owner = admit(app[CREDENTIALS], stats, now, request, device_id, False)
    attrs, wait_s = replies.query(request)
    # A poll from another address than the id's own (open access) records nothing.
    record = inventory.polled(device_id, attrs, now) if owner else inventory.devices.get(device_id)
    if_none_match = request.headers.get("If-None-Match")
    base = replies.base_url(request)
    answer = await polls.answer_asking(record, now) if owner else polls.answer(record, now)
    reply = replies.reply(polls, answer, base)
    if wait_s > 0 and (reply.etag is None or etag_matches(if_none_match, reply.etag)):
        # Long poll: nothing new for this device yet; wait until its answer changes.
        held = reply.etag
        deadline = now + wait_s
        changes = app[CHANGES]
        while (remaining := deadline - clock()) > 0:
            await changes.wait(remaining)
            now = clock()
            record = inventory.devices.get(device_id)
            answer = polls.answer(record, now)
            reply = replies.reply(polls, answer, base)
            if reply.etag != held:
                break
    if owner:
        inventory.set_blocked(device_id, answer.blocked_by_firmware, now)
    return replies.respond(stats, reply, if_none_match)
