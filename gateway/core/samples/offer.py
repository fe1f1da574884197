"""A device's sample for retraining, parsed and checked: :func:`parse_offer`.

The body (HTTP ``POST /devices/{id}/samples`` or MQTT ``devices/{id}/samples``) is one JSON object::

    {"reason": "error", "model_id": "detector", "model_version": "1.4.0",
     "class": "person", "confidence": 0.41,
     "embedding": [0.12, -0.5, ...]}          # or, where samples.raw = true:
     "raw": "<base64 of the input>", "content_type": "image/jpeg"}

Exactly one of ``embedding`` (at most ``samples.max_embedding_dims`` finite numbers, kept as
float32 little-endian bytes) or ``raw`` (standard base64, at most ``samples.max_bytes`` once
decoded). The sample's identity is the SHA-256 of those content bytes: the name of its blob on the
upload server and the key that de-duplicates it. Any other field is ignored, never passed on.
A bad body raises :class:`FormatError` naming the field and what it must be.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import FormatError


class Reason(enum.StrEnum):
    """Why the device kept this input; the order of :data:`PRIORITY` is the budget's."""

    ERROR = "error"
    SHADOW_DISAGREEMENT = "shadow_disagreement"
    LOW_CONFIDENCE = "low_confidence"
    USER_CORRECTED = "user_corrected"
    RANDOM = "random"


# Tier of each reason: 0 goes first. Errors, shadow disagreements and low confidence share the top
# tier (the issue names them together), then inputs a user corrected, then random ones.
PRIORITY: dict[Reason, int] = {
    Reason.ERROR: 0,
    Reason.SHADOW_DISAGREEMENT: 0,
    Reason.LOW_CONFIDENCE: 0,
    Reason.USER_CORRECTED: 1,
    Reason.RANDOM: 2,
}
EMBEDDING = "application/x-float32le"  # the content type of an embedding's bytes
_TEXT = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")  # printable, one line, at most 128 characters
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}$")
_FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class Limits:
    raw: bool
    max_bytes: int
    max_embedding_dims: int


@dataclass(frozen=True)
class Offer:
    """One sample as the gateway keeps it: its metadata and its content bytes."""

    reason: Reason
    model_id: str
    model_version: str
    label: str  # the class the model gave it
    confidence: float
    content_type: str
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def kind(self) -> str:
        return "embedding" if self.content_type == EMBEDDING else "raw"


def _text(doc: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = doc.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not _TEXT.match(value):
        raise FormatError(f"{key}: expected a string of 1 to 128 printable characters")
    return value


def _embedding(value: Any, limits: Limits) -> bytes:
    if not isinstance(value, list) or not 1 <= len(value) <= limits.max_embedding_dims:
        raise FormatError(f"embedding: expected a list of 1 to {limits.max_embedding_dims} numbers")
    for x in value:
        if (
            isinstance(x, bool)
            or not isinstance(x, int | float)
            or not math.isfinite(x)
            or abs(x) > _FLOAT32_MAX
        ):
            raise FormatError("embedding: expected finite numbers within float32's range")
    return struct.pack(f"<{len(value)}f", *value)


def _raw(value: Any, limits: Limits) -> bytes:
    if not limits.raw:
        raise FormatError(
            "raw: raw inputs are not taken at this site (samples.raw = false); send an embedding"
        )
    # a cheap bound before decoding: base64 is 4 characters for 3 bytes
    if not isinstance(value, str) or not 0 < len(value) <= (limits.max_bytes + 2) // 3 * 4:
        raise FormatError(f"raw: expected base64 of 1 to {limits.max_bytes} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError("raw: expected standard base64 (RFC 4648 section 4)") from None
    if not 0 < len(data) <= limits.max_bytes:
        raise FormatError(f"raw: expected base64 of 1 to {limits.max_bytes} bytes")
    return data


def parse_offer(doc: Any, limits: Limits) -> Offer:
    """The checked sample, or :class:`FormatError` naming the first bad field."""
    if not isinstance(doc, dict):
        raise FormatError("expected a JSON object")
    try:
        reason = Reason(str(doc.get("reason")))
    except ValueError:
        raise FormatError("reason: expected one of " + ", ".join(r.value for r in Reason)) from None
    confidence = doc.get("confidence")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1:
        raise FormatError("confidence: expected a number from 0 to 1")
    if ("embedding" in doc) == ("raw" in doc):
        raise FormatError("expected exactly one of embedding (a list of numbers) or raw (base64)")
    if "embedding" in doc:
        content_type, content = EMBEDDING, _embedding(doc["embedding"], limits)
    else:
        content = _raw(doc["raw"], limits)
        content_type = doc.get("content_type", "application/octet-stream")
        if not isinstance(content_type, str) or not _CONTENT_TYPE.match(content_type):
            raise FormatError("content_type: expected a media type such as image/jpeg")
    if len(content) > limits.max_bytes:
        raise FormatError(
            f"embedding: {len(content)} bytes, more than samples.max_bytes = {limits.max_bytes}"
        )
    return Offer(
        reason=reason,
        model_id=_text(doc, "model_id", required=False),
        model_version=_text(doc, "model_version", required=True),
        label=_text(doc, "class", required=True),
        confidence=float(confidence),
        content_type=content_type,
        content=content,
    )
