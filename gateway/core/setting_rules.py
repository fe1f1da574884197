"""What a valid setting looks like: the checks the settings' fields carry in their ``metadata``
(``expect``, for the one-line error, and ``ok``), and ``HOST:PORT`` parsing. Pure."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gateway.core.supervision import parse_fault_plan

_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]*):(\d{1,5})$")


def parse_hostport(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) -> (host, port); raises ValueError."""
    m = _HOSTPORT.match(value)
    if not m or not 0 <= int(m.group(2)) <= 65535:
        raise ValueError(value)
    host = m.group(1).strip("[]") or "0.0.0.0"
    return host, int(m.group(2))


def check(expect: str, ok: Callable[[Any], bool]) -> dict[str, Any]:
    return {"expect": expect, "ok": ok}


def _hostport_ok(v: Any) -> bool:
    if v == "":
        return True
    try:
        parse_hostport(v)
    except ValueError:
        return False
    return True


HOSTPORT = check("HOST:PORT such as 0.0.0.0:8080, or empty to disable", _hostport_ok)
POSITIVE = check("a number greater than 0", lambda v: v > 0)
NON_NEGATIVE = check("a number of at least 0", lambda v: v >= 0)
FRACTION = check("a number from 0 to 1", lambda v: 0 <= v <= 1)
URL_OR_EMPTY = check(
    "an http:// or https:// URL, or empty", lambda v: v == "" or re.match(r"^https?://", v) is not None
)

MQTT_URL_OR_EMPTY = check(
    "an mqtt:// or mqtts:// URL with a host, or empty",
    lambda v: v == "" or re.match(r"^mqtts?://([^@/]*@)?[^@/:]+", v) is not None,
)
TRUST_FORMAT = check('"index" or "tuf"', lambda v: v in ("index", "tuf"))
# A shared subscription's name: no '/', '+', '#' [MQTT 5, 4.8.2]
SHARE_NAME = check("a name without '/', '+' or '#', or empty", lambda v: not any(c in v for c in "/+#"))


def _fault_plan_ok(v: Any) -> bool:
    try:
        parse_fault_plan(v)
    except ValueError:
        return False
    return True


FAULT_PLAN = check('empty (a test-only fault plan such as "seed=7;after=0.2-1.5;times=1")', _fault_plan_ok)


def choice(*options: str) -> dict[str, Any]:
    return check("one of " + ", ".join(repr(o) for o in options), lambda v: v in options)
