"""The deployment manifest in the reference format, parsed and validated, unknown fields kept.

A manifest is what the cloud writes (inside the signed site index) and what a device reads from
its update poll. This module only parses and renders it; trust (is the index signed?) lives in
``gateway.trust`` and decisions (who gets it?) in ``gateway.rollout``.

Timestamps (``start_time``, ``end_time``) are RFC 3339 strings on the wire and POSIX seconds here.
``length`` is the artifact's size in bytes: the reference format has no such field, but the trust
model needs one (an artifact longer than announced is refused before it fills the disk), so the
registry tool always writes it and the gateway requires it.

``chunks`` (optional, an extra field devices ignore) names the artifact's signed chunk list:
``{"size": 1048576, "sha256": "<digest of the list file>", "url": "<where the list is>"}``; see
:mod:`gateway.core.chunks`. Without it an artifact is only served once it is whole and verified.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gateway.core.chunks import MAX_CHUNK_BYTES, MIN_CHUNK_BYTES
from gateway.core.errors import FormatError

# \Z, not $: "$" also matches before a final newline, so "v1\n" would pass as an id.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}\Z"  # and no ".." (valid_id)
_ID = re.compile(ID_PATTERN)
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,254}\Z")

KNOWN_FIELDS = frozenset(
    {
        "model_id",
        "version",
        "data_version",
        "artifact_url",
        "sha256",
        "signature_url",
        "length",
        "target_cohort",
        "rollout_percentage",
        "start_time",
        "end_time",
        "compatibility",
        "health_checks",
        "chunks",
    }
)


class Command(enum.StrEnum):
    """A coordinator command signed into the index for ``model@version`` (or ``model``)."""

    PAUSED = "paused"  # hold the gate
    ABORTED = "aborted"  # abort it


# The project's own fields in TUF metadata's signed parts (TUF 1.0 lets a repository add fields):
TUF_ISSUED = "x-ota-issued"  # timestamp: when it was signed (RFC 3339), the clock floor's input
TUF_COMMANDS = "x-ota-commands"  # a targets role: {"model@version": "paused" | "aborted"}


HEALTH_KEYS = ("max_cpu_percent", "max_ram_percent", "max_latency_ms", "max_error_rate", "warmup_inferences")


def valid_id(value: str) -> bool:
    """Model ids, versions, device ids: letters, digits, ``_ . -``, no leading dot, at most 128."""
    return isinstance(value, str) and _ID.match(value) is not None and ".." not in value


def parse_time(value: Any, what: str) -> float:
    """RFC 3339 (``2026-11-25T10:00:00Z``) or POSIX seconds -> POSIX seconds."""
    if isinstance(value, bool):
        raise FormatError(f"{what}: expected an RFC 3339 time, got {value!r}")
    if isinstance(value, int | float):
        seconds = _finite(value)
        if seconds is None:
            raise FormatError(f"{what}: expected a finite number of seconds, got {value!r}")
        return seconds
    if not isinstance(value, str):
        raise FormatError(f"{what}: expected an RFC 3339 time, got {value!r}")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise FormatError(f"{what}: expected an RFC 3339 time, got {value!r}") from exc
    if dt.tzinfo is None:
        raise FormatError(f"{what}: a time needs a zone (Z or +hh:mm), got {value!r}")
    return dt.timestamp()


def _finite(value: float) -> float | None:
    """``value`` as a finite float, or None (NaN, infinities, and an int too large for a float)."""
    try:
        f = float(value)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def format_time(ts: float) -> str:
    """POSIX seconds -> ``2026-11-25T10:00:00Z``."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class HealthChecks:
    max_cpu_percent: float | None = None
    max_ram_percent: float | None = None
    max_latency_ms: float | None = None
    max_error_rate: float | None = None
    warmup_inferences: int = 0
    # behaviour that needs no baseline (a model's first version is judged by these too):
    min_confidence: float | None = None  # floor for the inference-weighted mean confidence
    expected_classes: tuple[tuple[str, float], ...] = ()  # class -> least share of detections


@dataclass(frozen=True)
class ChunkList:
    """Where the signed chunk list of an artifact is, its digest, and the chunk size it cuts by."""

    size: int
    sha256: str
    url: str


@dataclass(frozen=True)
class Deployment:
    """One deployment manifest. ``raw`` is the cloud's dict, kept to pass unknown fields through."""

    model_id: str
    version: str
    artifact_url: str
    sha256: str
    signature_url: str
    length: int
    data_version: str | None = None
    target_cohort: str = ""
    rollout_percentage: float = 100.0
    start_time: float | None = None
    end_time: float | None = None
    min_firmware: str | None = None
    max_firmware: str | None = None
    health: HealthChecks = HealthChecks()
    chunks: ChunkList | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        """Identifies the deployment (and seeds percentage bucketing)."""
        return f"{self.model_id}@{self.version}"

    @property
    def filename(self) -> str:
        """The artifact's file name, taken from the cloud's URL."""
        return artifact_filename(self.artifact_url)

    def to_device(self, artifact_url: str, signature_url: str) -> dict[str, Any]:
        """The manifest a device gets: the cloud's fields untouched but for the two URLs."""
        out = dict(self.raw)
        out["artifact_url"] = artifact_url
        out["signature_url"] = signature_url
        return out


def artifact_filename(url: str) -> str:
    name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    if not _FILENAME.match(name) or ".." in name or name.endswith(".sig"):
        raise FormatError(f"artifact_url: the file name {name!r} is not a plain file name")
    return name


def _number(d: Mapping[str, Any], key: str, what: str, *, lo: float, hi: float | None = None) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    f = None if isinstance(v, bool) or not isinstance(v, int | float) else _finite(v)
    if f is None or f < lo or (hi is not None and f > hi):
        rng = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
        raise FormatError(f"{what}.{key}: expected a finite number {rng}, got {v!r}")
    return f


def _str(d: Mapping[str, Any], key: str, what: str, *, required: bool = True) -> str | None:
    v = d.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v:
        raise FormatError(f"{what}.{key}: expected a non-empty string, got {v!r}")
    return v


def _expected_classes(v: Any, what: str) -> tuple[tuple[str, float], ...]:
    """``{"person": 0.3}`` (least share of detections) or ``["person"]`` (must be seen at all)."""
    if v is None:
        return ()
    if isinstance(v, list) and len(v) <= 64 and all(isinstance(n, str) for n in v):
        v = dict.fromkeys(v, 0.0)
    if not isinstance(v, Mapping) or len(v) > 64:
        raise FormatError(f"{what}.expected_classes: expected a list of class names or an object of shares")
    out = []
    for name, share in v.items():
        if not isinstance(name, str) or not name or len(name) > 64:
            raise FormatError(f"{what}.expected_classes: class names are non-empty strings")
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
            raise FormatError(f"{what}.expected_classes.{name}: expected a share from 0 to 1")
        out.append((name, float(share)))
    return tuple(sorted(out))


def parse_chunks(v: Any, what: str) -> ChunkList | None:
    """The ``chunks`` field: absent (None), or size, sha256 and url, each checked."""
    if v is None:
        return None
    if not isinstance(v, Mapping):
        raise FormatError(f"{what}.chunks: expected an object with size, sha256 and url")
    size = v.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not MIN_CHUNK_BYTES <= size <= MAX_CHUNK_BYTES:
        raise FormatError(
            f"{what}.chunks.size: expected a whole number of bytes from {MIN_CHUNK_BYTES} to {MAX_CHUNK_BYTES}, "
            f"got {size!r}"
        )
    sha = _str(v, "sha256", f"{what}.chunks")
    assert sha is not None
    if not _SHA256.match(sha):
        raise FormatError(f"{what}.chunks.sha256: expected 64 lowercase hex digits")
    url = _str(v, "url", f"{what}.chunks")
    assert url is not None
    return ChunkList(size, sha, url)


def parse_deployment(d: Any, what: str = "deployment") -> Deployment:
    """Validate one manifest dict; FormatError names the field and what was wrong."""
    if not isinstance(d, Mapping):
        raise FormatError(f"{what}: expected an object")
    model_id = _str(d, "model_id", what)
    version = _str(d, "version", what)
    assert model_id is not None and version is not None
    if not valid_id(model_id):
        raise FormatError(f"{what}.model_id: {model_id!r} is not a plain identifier")
    if not valid_id(version):
        raise FormatError(f"{what}.version: {version!r} is not a plain identifier")
    what = f"deployment {model_id}@{version}"
    sha = _str(d, "sha256", what)
    assert sha is not None
    if not _SHA256.match(sha):
        raise FormatError(f"{what}.sha256: expected 64 lowercase hex digits")
    artifact_url = _str(d, "artifact_url", what)
    signature_url = _str(d, "signature_url", what)
    assert artifact_url is not None and signature_url is not None
    artifact_filename(artifact_url)
    length = d.get("length")
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise FormatError(f"{what}.length: expected the artifact size in bytes, got {length!r}")
    cohort = d.get("target_cohort") or ""
    if not isinstance(cohort, str):
        raise FormatError(f"{what}.target_cohort: expected a cohort expression string")
    pct = _number(d, "rollout_percentage", what, lo=0, hi=100)
    start = parse_time(d["start_time"], f"{what}.start_time") if d.get("start_time") else None
    end = parse_time(d["end_time"], f"{what}.end_time") if d.get("end_time") else None
    if start is not None and end is not None and end <= start:
        raise FormatError(f"{what}.end_time: must be after start_time")
    compat = d.get("compatibility") or {}
    if not isinstance(compat, Mapping):
        raise FormatError(f"{what}.compatibility: expected an object")
    hc = d.get("health_checks") or {}
    if not isinstance(hc, Mapping):
        raise FormatError(f"{what}.health_checks: expected an object")
    hw = f"{what}.health_checks"
    warmup = hc.get("warmup_inferences", 0)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise FormatError(f"{hw}.warmup_inferences: expected a whole number of at least 0")
    health = HealthChecks(
        max_cpu_percent=_number(hc, "max_cpu_percent", hw, lo=0, hi=100),
        max_ram_percent=_number(hc, "max_ram_percent", hw, lo=0, hi=100),
        max_latency_ms=_number(hc, "max_latency_ms", hw, lo=0),
        max_error_rate=_number(hc, "max_error_rate", hw, lo=0, hi=1),
        warmup_inferences=warmup,
        min_confidence=_number(hc, "min_confidence", hw, lo=0, hi=1),
        expected_classes=_expected_classes(hc.get("expected_classes"), hw),
    )
    dv = d.get("data_version")
    return Deployment(
        model_id=model_id,
        version=version,
        artifact_url=artifact_url,
        sha256=sha,
        signature_url=signature_url,
        length=length,
        data_version=None if dv is None else str(dv),
        target_cohort=cohort,
        rollout_percentage=100.0 if pct is None else pct,
        start_time=start,
        end_time=end,
        min_firmware=_str(compat, "min_firmware", f"{what}.compatibility", required=False),
        max_firmware=_str(compat, "max_firmware", f"{what}.compatibility", required=False),
        health=health,
        chunks=parse_chunks(d.get("chunks"), what),
        raw=dict(d),
    )
