"""The common metrics message read in one step, by a typed msgspec decoder; the core reads the rest.

:func:`gateway.core.metrics.parse_metrics` reads any message and refuses a bad one in its own
words, but it is plain Python over a decoded dict: 9 us of a message's 38 on the embedded
broker's ingest (issue 27). Here msgspec decodes the JSON straight into a typed value whose
field types and ranges are the core's (the decode and every range check in C, about 1 us), and
the checks that are not a type or a range (the sender's id, the ids' form, errors within
inferences, and the timestamp, agreement and drift, by the core's own functions) follow.

It only ever *accepts*: :func:`read_sample` gives the :class:`~gateway.core.metrics.Sample` that
``parse_metrics`` would give, or None, and then the caller hands the message to the core, which
accepts or refuses it as before. So what it accepts must be a subset of what the core accepts,
with the same values: ``tests/telemetry/test_fast_metrics.py`` checks that over random and
spliced messages. What steps aside on purpose: a message msgspec reads otherwise than ``json``
(:func:`gateway.runtime.jsonfast.decode_object`'s cases), one nested past the core's depth, a
count past what msgspec holds in an int (the core takes any), and the core's lenient forms (a
``class_counts`` of ``0``, ``false`` or ``[]``).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from gateway.core.agreement import parse_agreement
from gateway.core.drift_sketch import parse_drift
from gateway.core.errors import FormatError
from gateway.core.jsondoc import too_deep
from gateway.core.manifest import ID_PATTERN, valid_id
from gateway.core.metrics import (
    MAX_CLASS_NAME,
    MAX_CLASSES,
    MAX_COUNT,
    NONE,
    RANGES,
    Sample,
    device_timestamp,
)


def _within(field: str) -> Meta:
    """The core's range of a figure (:data:`gateway.core.metrics.RANGES`), bounds included."""
    lo, hi = RANGES[field]
    return Meta(ge=lo, le=hi)


Id = Annotated[str, Meta(pattern=ID_PATTERN)]  # and no "..": checked after
IdOrEmpty = Annotated[str, Meta(pattern=rf"\A\Z|{ID_PATTERN}")]  # "": the message names no model
Count = Annotated[int, Meta(ge=0, le=MAX_COUNT)]
ClassName = Annotated[str, Meta(min_length=1, max_length=MAX_CLASS_NAME)]
Classes = Annotated[dict[ClassName, Annotated[int, Meta(ge=0)]], Meta(max_length=MAX_CLASSES)] | None


class _Report(msgspec.Struct):
    """The metrics message's fields the core reads, typed and bounded as it bounds them. A field a
    message leaves out takes the value the core gives a missing one."""

    model_version: Id
    device_id: str | None = None
    model_id: IdOrEmpty | UnsetType = UNSET  # absent (the device's current model) is not "" (none)
    num_inferences: Count = 0
    num_errors: Count = 0
    error_rate: Annotated[float, _within("error_rate")] | None = None
    cpu_percent: Annotated[float, _within("cpu_percent")] | None = None
    ram_percent: Annotated[float, _within("ram_percent")] | None = None
    temperature_c: Annotated[float, _within("temperature_c")] | None = None
    mean_confidence: Annotated[float, _within("mean_confidence")] | None = None
    unknown_rate: Annotated[float, _within("unknown_rate")] | None = None
    avg_latency_ms: Annotated[float, _within("avg_latency_ms")] | None = None
    uptime_seconds: Annotated[float, _within("uptime_seconds")] | None = None
    class_counts: Classes = None
    shadow: bool = False
    timestamp: Any = None
    agreement: Any = None
    drift: Any = None


_DECODER = msgspec.json.Decoder(_Report)


def _utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def read_sample(device_id: str, payload: bytes, now: float, model_id: str | None) -> Sample | None:
    """The sample ``parse_metrics(device_id, payload, now, model_id=model_id)`` gives, or None:
    the core must read this one (it may accept it, or refuse it in its words)."""
    if too_deep(payload) or (not payload.isascii() and not _utf8(payload)):
        return None  # msgspec skips the fields it does not read unchecked; json reads them all
    try:
        r = _DECODER.decode(payload)
    except (msgspec.MsgspecError, RecursionError):
        return None
    if r.device_id is not None and r.device_id != device_id:
        return None
    mid = r.model_id
    if mid is UNSET:
        mid = model_id or ""
        if mid and not valid_id(mid):
            return None
    elif ".." in mid:
        return None
    if ".." in r.model_version or r.num_errors > r.num_inferences:
        return None
    agreement = drift = None
    timestamp = r.timestamp
    if timestamp is not None or r.agreement is not None or r.drift is not None:
        if r.agreement is not None and not r.shadow:
            return None
        where = f"metrics from {device_id}"
        try:
            timestamp = device_timestamp(timestamp, where)
            agreement = None if r.agreement is None else parse_agreement(r.agreement, where)
            drift = parse_drift(r.drift, where)
        except FormatError:
            return None
    return Sample(
        device_id,
        now,
        mid,
        r.model_version,
        r.num_inferences,
        r.num_errors,
        r.avg_latency_ms,
        r.cpu_percent,
        r.ram_percent,
        r.temperature_c,
        r.class_counts or NONE,
        r.mean_confidence,
        r.unknown_rate,
        r.shadow,
        r.uptime_seconds,
        agreement,
        drift if drift is not None else {},  # as the core gives it
        timestamp,
    )
