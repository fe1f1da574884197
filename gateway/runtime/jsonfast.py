"""JSON on the ingest's hot path, by msgspec: several times faster than ``json`` both ways.

Every device message is decoded once and journaled once, so on a busy site these two calls are a
good part of the gateway's work per message (issue 27). They give what the ``json`` forms they
stand in for give, and where msgspec would answer otherwise they step aside:

- :func:`decode_object` returns None for anything that is not a JSON object msgspec reads (not
  JSON, NaN or Infinity, a lone surrogate escape, a number too large for a float, nesting past
  :data:`~gateway.core.jsondoc.MAX_DEPTH`): the caller then hands the bytes to the core, whose
  :func:`gateway.core.jsondoc.loads` accepts or refuses them in its own words, as before. What
  msgspec reads, ``json.loads`` reads to the same value.
- :func:`encode_sorted` writes the same JSON as ``json.dumps(body, separators=(",", ":"),
  sort_keys=True)``, its text as UTF-8 rather than ``\\u`` escapes; a text with a lone surrogate
  (not UTF-8) goes to ``json.dumps`` itself.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from gateway.core.jsondoc import too_deep

_DECODER = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder(order="sorted")


def decode_object(data: bytes | bytearray) -> dict[str, Any] | None:
    """The JSON object in ``data``, or None: let the core read ``data`` and answer."""
    if too_deep(bytes(data)):
        return None
    try:
        doc = _DECODER.decode(data)
    except (msgspec.MsgspecError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def encode_sorted(body: Any) -> str:
    """``body`` as compact JSON text, its objects' keys sorted."""
    try:
        return _ENCODER.encode(body).decode()
    except UnicodeEncodeError:
        return json.dumps(body, separators=(",", ":"), sort_keys=True)
