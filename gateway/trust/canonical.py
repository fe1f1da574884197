"""Canonical JSON, the bytes an index signature covers: sorted keys, no spaces, UTF-8.

Floats are written by Python's shortest round-trip repr; the registry tool writes the same, and a
cloud in another language must too (or avoid floats, which the reference manifest allows).
"""

from __future__ import annotations

import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()
