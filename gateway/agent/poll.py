"""What the agent makes of a gateway's answer: the poll's manifest, its ``Retry-After``, and why it waits.

Nothing a gateway sends may stop the agent or silence it: every body is read up to a bound, JSON
is parsed with the shared nesting bound (:mod:`gateway.core.jsondoc`), a manifest must have the
shape the flow needs (the five strings and an integer ``length``, the bound of the download), and
``Retry-After`` (seconds or an HTTP date, RFC 9110 section 10.2.3) is clamped into
``[MIN_RETRY_S, max_s]``, so ``inf``, ``nan``, ``-5`` or ``1e308`` cannot make it ask every
instant or never again. A :class:`Waiting` says why it waits and when it asks again.

What it leaves to others: the download (:mod:`.transfer`) and the checks of the bytes (:mod:`.verify`).
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.agent.errors import AgentError
from gateway.core import jsondoc
from gateway.core.errors import FormatError

MAX_MANIFEST_BYTES = 1 << 20  # a manifest is a few hundred bytes; a generous bound all the same
MAX_SIGNATURE_BYTES = 16 << 10  # a DER ECDSA signature is ~72 bytes, Ed25519 64
MAX_ERROR_TEXT = 200  # of an error body, shown in a message
MIN_RETRY_S = 1.0
MAX_RETRY_S = 3600.0
MANIFEST_FIELDS = ("model_id", "version", "sha256", "artifact_url", "signature_url")


async def read_bounded(r: aiohttp.ClientResponse, max_bytes: int, what: str) -> bytes:
    """The whole body, refused (:class:`AgentError`) once it is longer than ``max_bytes``."""
    if r.content_length is not None and r.content_length > max_bytes:
        raise AgentError(
            f"{what}: the gateway sent {r.content_length} bytes, more than the {max_bytes} allowed"
        )
    body = await r.content.read(max_bytes + 1)
    while len(body) <= max_bytes and (more := await r.content.read(max_bytes + 1 - len(body))):
        body += more
    if len(body) > max_bytes:
        raise AgentError(f"{what}: the gateway sent more than the {max_bytes} bytes allowed")
    return body


async def error_text(r: aiohttp.ClientResponse) -> str:
    """The start of an error body for a message: never more than ``MAX_ERROR_TEXT`` bytes read."""
    return (await r.content.read(MAX_ERROR_TEXT)).decode("utf-8", "replace")


_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "true or false", type(None): "null"}  # fmt: skip


def check_manifest(doc: Any) -> dict[str, Any]:
    """``doc`` if it has the shape the flow needs; :class:`AgentError` naming what is wrong."""
    if not isinstance(doc, dict):
        what = _JSON_TYPES.get(type(doc), type(doc).__name__)
        raise AgentError(f"the gateway's answer is {what}, not a manifest (a JSON object)")
    missing = [k for k in MANIFEST_FIELDS if not isinstance(doc.get(k), str)]
    if missing:
        raise AgentError(f"the manifest lacks {', '.join(missing)} (or they are not strings)")
    length = doc.get("length")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise AgentError(f"the manifest's length is {length!r}, not the artifact's size in bytes")
    return doc


def parse_manifest(body: bytes) -> dict[str, Any]:
    """A poll's 200 body: bounded JSON (depth) with the manifest's shape, or :class:`AgentError`."""
    try:
        doc = jsondoc.loads(body)
    except FormatError as exc:
        raise AgentError(f"the gateway's answer is not a manifest: {exc}") from None
    return check_manifest(doc)


def retry_after(
    headers: Mapping[str, str], default_s: float, *, max_s: float = MAX_RETRY_S, now: float | None = None
) -> float:
    """The gateway's ``Retry-After`` in seconds, clamped into ``[MIN_RETRY_S, max_s]``; ``default_s``
    (clamped the same) when there is none or it is neither a number nor an HTTP date."""
    raw = headers.get("Retry-After")
    value = default_s
    if raw is not None:
        try:
            value = float(raw)
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(raw).timestamp()
                value = when - (time.time() if now is None else now)
            except (TypeError, ValueError, IndexError, OverflowError):
                value = default_s
    if math.isnan(value):
        value = default_s
    return min(max(value, MIN_RETRY_S), max(max_s, MIN_RETRY_S))


@dataclass(frozen=True)
class Waiting:
    """Why the agent waits (the gateway's ``X-OTA-Reason``, or what went wrong) and when it asks
    again (``at``, wall-clock seconds)."""

    device_id: str
    why: str
    delay_s: float
    at: float
    failed: bool = False

    def text(self) -> str:
        at = time.strftime("%H:%M:%S", time.gmtime(self.at))
        return f"{self.device_id}: {self.why}; asking again in {self.delay_s:.0f} s (at {at} UTC)"


def why_no_update(status: int, headers: Mapping[str, str], changed: bool) -> str:
    """The words for a poll that installed nothing new (or did): what the gateway said."""
    reason = headers.get("X-OTA-Reason", "")[:80]
    if changed:
        return "installed the update"
    if status == 304:
        return "nothing new since the last manifest"
    if status == 200:
        return "up to date"
    blocked = headers.get("X-OTA-Blocked-By-Firmware", "")[:80]
    tail = f", blocked by firmware {blocked}" if blocked else ""
    return f"no update for now ({reason or 'no reason given'}{tail})"
