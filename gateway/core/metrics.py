"""The reference metrics message, validated: what a device reports about its model at work.

Fields (DESIGN.md): ``device_id, timestamp, model_version, avg_latency_ms, num_inferences,
num_errors, error_rate, cpu_percent, ram_percent, uptime_seconds``, optionally ``temperature_c``,
``class_counts`` (class -> count), ``mean_confidence``, ``unknown_rate``; and ``model_id`` and
``shadow`` (true when the figures are those of a candidate running in shadow beside the active
model); ``drift`` (feature -> the window's sketch of it, :mod:`gateway.core.drift_sketch`); and in a
shadow message ``agreement`` (the two models on the same frames: :mod:`gateway.core.agreement`).
Unknown fields are ignored. The device's ``timestamp`` (Unix seconds, or a text such as ISO 8601
of at most ``MAX_TIMESTAMP_CHARS``) is kept as sent in the journaled sample, for the cloud and for
measuring a message's way in, but never places a sample in a window: the gateway's receive time
does (a device clock may be anything).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core import jsondoc
from gateway.core.agreement import Agreement, parse_agreement
from gateway.core.drift_sketch import DriftSketch, parse_drift
from gateway.core.errors import FormatError
from gateway.core.manifest import valid_id

MAX_PAYLOAD_BYTES = 16 << 10
MAX_CLASSES = 64
MAX_CLASS_NAME = 64
MAX_TIMESTAMP_CHARS = 64


@dataclass(frozen=True)
class Sample:
    device_id: str
    received_at: float
    model_id: str
    model_version: str
    inferences: int
    errors: int
    latency_ms: float | None
    cpu_percent: float | None
    ram_percent: float | None
    temperature_c: float | None = None
    class_counts: Mapping[str, int] = field(default_factory=dict)
    mean_confidence: float | None = None
    unknown_rate: float | None = None
    shadow: bool = False
    uptime_s: float | None = None
    agreement: Agreement | None = None  # only in a shadow message
    drift: Mapping[str, DriftSketch] = field(default_factory=dict)
    device_timestamp: float | str | None = None  # the device's own clock, as sent


def _num(
    doc: Mapping[str, Any],
    key: str,
    where: str,
    *,
    lo: float,
    hi: float | None = None,
    required: bool = False,
) -> float | None:
    v = doc.get(key)
    if v is None:
        if required:
            raise FormatError(f"{where}: {key} is required")
        return None
    try:  # an int too large for a float (JSON allows any number of digits) is out of range too
        f = None if isinstance(v, bool) or not isinstance(v, int | float) else float(v)
    except OverflowError:
        f = None
    if f is None or not math.isfinite(f) or f < lo or (hi is not None and f > hi):
        span = f"from {lo:g} to {hi:g}" if hi is not None else f"of at least {lo:g}"
        raise FormatError(f"{where}: {key} must be a finite number {span}, got {v!r}")
    return f


def _count(doc: Mapping[str, Any], key: str, where: str) -> int:
    v = doc.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > 10**12:
        raise FormatError(f"{where}: {key} must be a whole number of at least 0, got {v!r}")
    return v


def _device_timestamp(doc: Mapping[str, Any], where: str) -> float | str | None:
    v = doc.get("timestamp")
    if v is None or (isinstance(v, str) and 0 < len(v) <= MAX_TIMESTAMP_CHARS and v.isprintable()):
        return v
    if isinstance(v, int | float) and not isinstance(v, bool) and abs(v) < 1e18 and math.isfinite(v):
        return v
    raise FormatError(
        f"{where}: timestamp must be Unix seconds or a text of at most {MAX_TIMESTAMP_CHARS} characters"
    )


def parse_metrics(
    device_id: str, payload: bytes | Mapping[str, Any], now: float, *, model_id: str | None = None
) -> Sample:
    """Validate one message; :class:`FormatError` names the device and the field."""
    where = f"metrics from {device_id}"
    if isinstance(payload, bytes | bytearray):
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise FormatError(f"{where}: message of {len(payload)} bytes, at most {MAX_PAYLOAD_BYTES}")
        try:
            doc = jsondoc.loads(payload)
        except FormatError as exc:
            raise FormatError(f"{where}: {exc}") from None
    else:
        doc = payload
    if not isinstance(doc, Mapping):
        raise FormatError(f"{where}: expected a JSON object")
    claimed = doc.get("device_id")
    if claimed is not None and claimed != device_id:
        raise FormatError(f"{where}: device_id {claimed!r} is not the sender")
    version = doc.get("model_version")
    if not isinstance(version, str) or not valid_id(version):
        raise FormatError(f"{where}: model_version is required (letters, digits, '.', '_', '-')")
    mid = doc.get("model_id", model_id or "")
    if not isinstance(mid, str) or (mid and not valid_id(mid)):
        raise FormatError(f"{where}: model_id must be an id")
    inferences = _count(doc, "num_inferences", where)
    errors = _count(doc, "num_errors", where)
    if errors > inferences:
        raise FormatError(f"{where}: num_errors ({errors}) exceeds num_inferences ({inferences})")
    _num(doc, "error_rate", where, lo=0, hi=1)
    classes = doc.get("class_counts") or {}
    if not isinstance(classes, Mapping) or len(classes) > MAX_CLASSES:
        raise FormatError(f"{where}: class_counts must be an object of at most {MAX_CLASSES} classes")
    counts: dict[str, int] = {}
    for name, n in classes.items():
        if not isinstance(name, str) or not name or len(name) > MAX_CLASS_NAME:
            raise FormatError(f"{where}: class_counts has a bad class name {str(name)[:40]!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise FormatError(f"{where}: class_counts.{name} must be a whole number of at least 0")
        counts[name] = n
    shadow = doc.get("shadow", False)
    if not isinstance(shadow, bool):
        raise FormatError(f"{where}: shadow must be true or false")
    agreement = doc.get("agreement")
    if agreement is not None and not shadow:
        raise FormatError(f"{where}: agreement is reported only in a shadow message (shadow: true)")
    return Sample(
        device_id=device_id,
        received_at=now,
        model_id=mid,
        model_version=version,
        inferences=inferences,
        errors=errors,
        latency_ms=_num(doc, "avg_latency_ms", where, lo=0, hi=3.6e6),
        cpu_percent=_num(doc, "cpu_percent", where, lo=0, hi=100 * 256),  # per-core sums may pass 100
        ram_percent=_num(doc, "ram_percent", where, lo=0, hi=100),
        temperature_c=_num(doc, "temperature_c", where, lo=-100, hi=250),
        class_counts=counts,
        mean_confidence=_num(doc, "mean_confidence", where, lo=0, hi=1),
        unknown_rate=_num(doc, "unknown_rate", where, lo=0, hi=1),
        shadow=shadow,
        uptime_s=_num(doc, "uptime_seconds", where, lo=0),
        agreement=None if agreement is None else parse_agreement(agreement, where),
        drift=parse_drift(doc.get("drift"), where),
        device_timestamp=_device_timestamp(doc, where),
    )
