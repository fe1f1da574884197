"""JSON from the network, parsed with a bound on nesting: one ``loads`` for HTTP bodies and MQTT payloads.

``json.loads`` recurses once per level: a 100,000-deep ``[[[[...`` raises ``RecursionError``
(which no ``except ValueError`` catches, so it became a 500 or a dead hook), and a few thousand
levels that do parse are a trap for whatever walks the result. :func:`loads` counts the nesting
first, without recursion and in time linear in the input, and refuses anything deeper than
``max_depth`` with a :class:`FormatError`, as it does for anything that is not JSON. No document
we accept (metrics, events, operator bodies) needs more than a few levels.

What it leaves to callers: the schema (which keys, which types) and the size bound (the HTTP
server's ``client_max_size``, the broker's ``max_packet_bytes``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from gateway.core.errors import FormatError

MAX_DEPTH = 32
_SPECIAL = re.compile(rb'[\[\]{}"\\]')


def depth(data: bytes) -> int:
    """The deepest nesting of arrays and objects in ``data``, ignoring brackets inside strings.

    Linear: only the special bytes are visited (found by a compiled regex), with a two-state
    machine for strings and backslash escapes. Malformed input gives some number; the parser
    says what is wrong with it afterwards.
    """
    deepest = level = 0
    in_string = False
    skip = -1  # position of a byte escaped by the backslash before it
    for m in _SPECIAL.finditer(data):
        pos = m.start()
        if pos == skip:
            continue
        c = data[pos]
        if in_string:
            if c == 0x5C:  # backslash: the next byte is escaped, whatever it is
                skip = pos + 1
            elif c == 0x22:  # closing quote
                in_string = False
        elif c == 0x22:
            in_string = True
        elif c in (0x5B, 0x7B):  # [ {
            level += 1
            if level > deepest:
                deepest = level
        elif c in (0x5D, 0x7D):  # ] }
            level -= 1
    return deepest


def too_deep(raw: bytes, max_depth: int = MAX_DEPTH) -> bool:
    """Whether ``raw`` nests deeper than ``max_depth``. Cheap first: a document with few brackets
    cannot be deep (nearly every real message)."""
    return raw.count(b"[") + raw.count(b"{") > max_depth and depth(raw) > max_depth


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON from the network; :class:`FormatError` for anything malformed or too deep."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if too_deep(raw, max_depth):
        raise FormatError(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"not JSON ({exc})") from None
    except RecursionError:  # not reachable after the depth check; kept as the last line of defence
        raise FormatError(f"JSON nested deeper than {max_depth} levels") from None


def load_object(data: bytes | str, expected: str) -> dict[str, Any]:
    """A JSON object from the network; :class:`FormatError` says ``expected`` (where and what, e.g.
    ``"body: expected a JSON object"``) and, for what does not parse, why."""
    try:
        doc = loads(data)
    except FormatError as exc:
        raise FormatError(f"{expected} ({exc})") from None
    if not isinstance(doc, dict):
        raise FormatError(expected)
    return doc
