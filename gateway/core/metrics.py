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

The message is one value, :class:`MetricsMessage`, with one wire form, :func:`encode` (a JSON
object, its keys in one order, absent fields left out): the device agent builds and encodes it
(:mod:`gateway.agent.shadow`), a device's window is turned back into one for the replay trace
(:meth:`gateway.core.window.DeviceWindow.message`), and :func:`parse_message` reads one back,
validated. :func:`parse_metrics` reads the same message as a :class:`Sample`: the figures the
gateway adds into its windows, at its own receive time.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from gateway.core import jsondoc
from gateway.core.agreement import Agreement, parse_agreement
from gateway.core.drift_sketch import DriftSketch, parse_drift
from gateway.core.errors import FormatError
from gateway.core.manifest import valid_id

MAX_PAYLOAD_BYTES = 16 << 10
MAX_CLASSES = 64
MAX_CLASS_NAME = 64
MAX_TIMESTAMP_CHARS = 64
MAX_COUNT = 10**12  # num_inferences and num_errors
# The figures' ranges, bounds included (also the fast read's: gateway.telemetry.fast_metrics).
RANGES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "error_rate": (0, 1),
        "cpu_percent": (0, 100 * 256),  # per-core sums may pass 100
        "ram_percent": (0, 100),
        "temperature_c": (-100, 250),
        "mean_confidence": (0, 1),
        "unknown_rate": (0, 1),
        "avg_latency_ms": (0, 3.6e6),
        "uptime_seconds": (0, sys.float_info.max),
    }
)
NONE: Mapping[str, Any] = MappingProxyType({})  # an empty mapping nobody can add to


@dataclass(frozen=True, kw_only=True)
class MetricsMessage:
    """The reference metrics message (the wire value: ``agreement`` and ``drift`` in their JSON
    form), its fields in the wire form's order. ``extra``: fields of the device's own, passed
    through as they are."""

    device_id: str | None = None
    timestamp: float | str | None = None  # the device's clock, as sent
    model_id: str | None = None
    model_version: str
    num_inferences: int | None = None
    num_errors: int | None = None
    error_rate: float | None = None
    cpu_percent: float | None = None
    ram_percent: float | None = None
    temperature_c: float | None = None
    mean_confidence: float | None = None
    unknown_rate: float | None = None
    avg_latency_ms: float | None = None
    uptime_seconds: float | None = None
    class_counts: Mapping[str, int] | None = None
    drift: Mapping[str, Any] | None = None
    agreement: Mapping[str, Any] | None = None  # only in a shadow message
    shadow: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, figures: Mapping[str, Any], **fields: Any) -> MetricsMessage:
        """A message of an inference app's figures (the reference names; others go to ``extra``)
        with ``fields`` over them, as they are: the gateway judges them, and counts a message it
        refuses against the version that sent it."""
        doc = {**figures, **fields}
        # a null stays in extra, so it is sent as null (the gateway judges a null count as invalid)
        known = {k: doc.pop(k) for k in WIRE_ORDER if doc.get(k) is not None}
        return cls(**known, extra=doc)


# the wire form's key order (a window's message in the replay traces has always had it)
WIRE_ORDER = tuple(f.name for f in dataclasses.fields(MetricsMessage) if f.name != "extra")


def encode(message: MetricsMessage) -> dict[str, Any]:
    """The message as its JSON object: the reference fields in :data:`WIRE_ORDER`, those absent
    (None, and ``shadow`` when false) left out, then its ``extra`` fields."""
    out: dict[str, Any] = {}
    for name in WIRE_ORDER:
        value = getattr(message, name)
        if value is not None and value is not False:
            out[name] = dict(value) if isinstance(value, Mapping) else value
    for name, value in message.extra.items():
        out.setdefault(name, value)
    return out


class Sample(NamedTuple):
    """One accepted report's figures, at the gateway's receive time. A named tuple, not a frozen
    dataclass: one is made for every message, and a frozen dataclass of 18 fields takes four times
    as long to make (each field set through ``object.__setattr__``)."""

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
    class_counts: Mapping[str, int] = NONE
    mean_confidence: float | None = None
    unknown_rate: float | None = None
    shadow: bool = False
    uptime_s: float | None = None
    agreement: Agreement | None = None  # only in a shadow message
    drift: Mapping[str, DriftSketch] = NONE
    device_timestamp: float | str | None = None  # the device's own clock, as sent

    def record(self) -> dict[str, Any]:
        """The sample as the outbox journals it for the cloud (a ``sample`` record): its own field
        names, which the cloud's ingest reads, so they stay as they are (not the wire form's)."""
        body: dict[str, Any] = {
            "device_id": self.device_id,
            "model_id": self.model_id,
            "model_version": self.model_version,
            "inferences": self.inferences,
            "errors": self.errors,
            "latency_ms": self.latency_ms,
            "cpu_percent": self.cpu_percent,
            "ram_percent": self.ram_percent,
            "temperature_c": self.temperature_c,
            "class_counts": dict(self.class_counts),
            "mean_confidence": self.mean_confidence,
            "unknown_rate": self.unknown_rate,
            "shadow": self.shadow,
        }
        if self.device_timestamp is not None:  # the device's clock, as sent (never used for windows)
            body["timestamp"] = self.device_timestamp
        if self.agreement is not None:  # a shadow message's agreement on the same frames
            body["agreement"] = self.agreement.to_json()
        return body


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


def _number(
    doc: Mapping[str, Any], key: str, where: str, lo: float, hi: float = sys.float_info.max
) -> float | None:
    """:func:`_num` for the hot path: a JSON number in range is taken at once (``type`` is exact:
    no bool; NaN and infinities fail the comparisons); anything else goes to :func:`_num`, which
    refuses it in its words."""
    v = doc.get(key)
    if v is None:
        return None
    t = type(v)
    if (t is float or t is int) and lo <= v <= hi:
        return float(v)
    return _num(doc, key, where, lo=lo, hi=None if hi == sys.float_info.max else hi)


def _count(doc: Mapping[str, Any], key: str, where: str) -> int:
    v = doc.get(key, 0)
    if type(v) is int and 0 <= v <= MAX_COUNT:
        return v
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > MAX_COUNT:
        raise FormatError(f"{where}: {key} must be a whole number of at least 0, got {v!r}")
    return v


def parse_message(
    device_id: str, payload: bytes | Mapping[str, Any], *, model_id: str | None = None
) -> MetricsMessage:
    """One message, validated (its unknown fields left out); :class:`FormatError` names the device
    and the field."""
    return MetricsMessage(**_read(device_id, payload, model_id)[0])


def device_timestamp(v: Any, where: str) -> float | str | None:
    """The message's ``timestamp`` as kept: None, Unix seconds, or a short printable text."""
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
    """One message, validated, as the figures the gateway adds up, received at ``now``
    (``model_id``: the one the device runs, for a message that names none). The hot path of the
    ingest: the message's fields go straight into the sample, no message value built between."""
    m, agreement, drift = _read(device_id, payload, model_id)
    mid = m["model_id"]
    return Sample(
        device_id=device_id,
        received_at=now,
        model_id=mid if mid is not None else model_id or "",
        model_version=m["model_version"],
        inferences=m["num_inferences"] or 0,
        errors=m["num_errors"] or 0,
        latency_ms=m["avg_latency_ms"],
        cpu_percent=m["cpu_percent"],
        ram_percent=m["ram_percent"],
        temperature_c=m["temperature_c"],
        class_counts=m["class_counts"] or NONE,
        mean_confidence=m["mean_confidence"],
        unknown_rate=m["unknown_rate"],
        shadow=m["shadow"],
        uptime_s=m["uptime_seconds"],
        agreement=agreement,
        drift=drift,
        device_timestamp=m["timestamp"],
    )


def _document(where: str, payload: bytes | Mapping[str, Any]) -> Mapping[str, Any]:
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
    return doc


def _classes(doc: Mapping[str, Any], where: str) -> dict[str, int] | None:
    given = doc.get("class_counts")
    classes = given or {}
    if not isinstance(classes, Mapping) or len(classes) > MAX_CLASSES:
        raise FormatError(f"{where}: class_counts must be an object of at most {MAX_CLASSES} classes")
    counts: dict[str, int] = {}
    for name, n in classes.items():
        if not isinstance(name, str) or not name or len(name) > MAX_CLASS_NAME:
            raise FormatError(f"{where}: class_counts has a bad class name {str(name)[:40]!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise FormatError(f"{where}: class_counts.{name} must be a whole number of at least 0")
        counts[name] = n
    return counts if given is not None else None


def _read(
    device_id: str, payload: bytes | Mapping[str, Any], model_id: str | None
) -> tuple[dict[str, Any], Agreement | None, dict[str, DriftSketch]]:
    """The message's fields (:class:`MetricsMessage`'s), and its agreement and drift sketches read
    (the sample's)."""
    where = f"metrics from {device_id}"
    doc = _document(where, payload)
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
    error_rate = _number(doc, "error_rate", where, *RANGES["error_rate"])
    counts = _classes(doc, where)
    shadow = doc.get("shadow", False)
    if not isinstance(shadow, bool):
        raise FormatError(f"{where}: shadow must be true or false")
    agreement = doc.get("agreement")
    if agreement is not None and not shadow:
        raise FormatError(f"{where}: agreement is reported only in a shadow message (shadow: true)")
    latency_ms = _number(doc, "avg_latency_ms", where, *RANGES["avg_latency_ms"])  # checked in this order
    message = dict(
        device_id=claimed,
        timestamp=device_timestamp(doc.get("timestamp"), where),  # kept for the record, never judged
        model_id=doc.get("model_id"),
        model_version=version,
        num_inferences=inferences if "num_inferences" in doc else None,
        num_errors=errors if "num_errors" in doc else None,
        error_rate=error_rate,
        cpu_percent=_number(doc, "cpu_percent", where, *RANGES["cpu_percent"]),
        ram_percent=_number(doc, "ram_percent", where, *RANGES["ram_percent"]),
        temperature_c=_number(doc, "temperature_c", where, *RANGES["temperature_c"]),
        mean_confidence=_number(doc, "mean_confidence", where, *RANGES["mean_confidence"]),
        unknown_rate=_number(doc, "unknown_rate", where, *RANGES["unknown_rate"]),
        avg_latency_ms=latency_ms,
        uptime_seconds=_number(doc, "uptime_seconds", where, *RANGES["uptime_seconds"]),
        class_counts=counts,
        drift=doc.get("drift"),
        agreement=agreement,
        shadow=shadow,
    )
    read = None if agreement is None else parse_agreement(agreement, where)
    return message, read, parse_drift(doc.get("drift"), where)
