"""Drift sketches: the distribution of one input or output feature over a window, as a device
reports it in its metrics message (``drift: {feature: sketch}``) and as the manifest's reference
profile carries it (``drift_reference: {feature: sketch}``). Parsing, validation and merging; the
distances are :mod:`gateway.core.drift`'s.

The sketch is a *signed* DDSketch (Masson, Rim, Lee, VLDB 2019) with a fixed, coarse accuracy:
a value ``x`` with ``|x| > zero_width`` counts in bucket ``k = ceil(log|x| / log GAMMA)`` of the
``pos`` or ``neg`` store by its sign; the rest count in ``zero``. Why this one:

- **any real value**: features such as a principal component or a centred brightness are negative
  as often as positive; the positive-only latency sketch (:mod:`gateway.core.sketch`) cannot hold
  them. A fixed-range histogram would need every device and the cloud to agree on the range first.
- **exactly mergeable**: merging adds bucket counts (associative, commutative, no error added),
  so a site's or a cohort's window is the sum of its devices' messages, and a day the sum of its
  windows. Sample-based summaries (reservoirs, t-digest) merge only approximately.
- **compact and bounded**: at ``GAMMA = 1.15`` (about 7 % relative accuracy) 48 buckets span a
  ratio of 800 in magnitude on each side of zero; a sketch holds at most ``MAX_BUCKETS`` (48) and
  folds its smallest magnitudes into ``zero`` past it (``zero_width`` grows), so resolution is
  lost next to zero, never in the tails where drift shows. The largest message (16 features of
  48 buckets, each count at its 10**9 cap) is about 14 KB of JSON: inside the message's 16 KiB
  with the rest of the metrics (``tests/core/test_drift_sketch.py`` builds it).
- **what drift needs**: the distance (:mod:`gateway.core.drift`) compares shares of mass in bins
  cut at the reference's quantiles; with buckets of 7 % width those shares are exact sums of
  whole buckets on both sides, with nothing interpolated.

Wire form (JSON): ``{"zero_width": 0.01, "zero": 3, "pos": {"12": 40, "13": 7}, "neg": {"4": 2}}``;
``zero_width`` and ``zero`` may be left out (0). Anything else is a :class:`FormatError`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.errors import FormatError

GAMMA = 1.15
LOG_GAMMA = math.log(GAMMA)
MAX_BUCKETS = 48  # per sketch, both signs together
MAX_KEY = 2000  # |k|: GAMMA**2000 is about 1e83, past any feature's magnitude
MAX_COUNT = 10**9  # values in one bucket of one window's sketch
MAX_FEATURES = 16  # per message
MAX_FEATURE_NAME = 64
MAX_ZERO_WIDTH = 1e12


def bucket_of(magnitude: float) -> int:
    return math.ceil(math.log(magnitude) / LOG_GAMMA)


def upper_edge(k: int) -> float:
    """Bucket ``k`` holds magnitudes in ``(GAMMA**(k-1), GAMMA**k]``."""
    return float(GAMMA**k)


Cell = tuple[int, int]
"""A place on the real line, ordered: ``(-1, -k)`` a negative bucket, ``(0, 0)`` the zero band,
``(1, k)`` a positive bucket (a larger negative ``k`` lies further left)."""


@dataclass
class DriftSketch:
    zero_width: float = 0.0
    zero: int = 0
    pos: dict[int, int] = field(default_factory=dict)
    neg: dict[int, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return self.zero + sum(self.pos.values()) + sum(self.neg.values())

    def add(self, value: float, n: int = 1) -> None:
        if n <= 0 or not math.isfinite(value):
            return
        if abs(value) <= self.zero_width or value == 0:
            self.zero += n
        else:
            store = self.pos if value > 0 else self.neg
            k = min(MAX_KEY, max(-MAX_KEY, bucket_of(abs(value))))
            store[k] = store.get(k, 0) + n
        self._cap()

    def extend(self, values: Iterable[float]) -> DriftSketch:
        for v in values:
            self.add(v)
        return self

    def merge(self, other: DriftSketch) -> None:
        self.zero += other.zero
        for mine, theirs in ((self.pos, other.pos), (self.neg, other.neg)):
            for k, n in theirs.items():
                mine[k] = mine.get(k, 0) + n
        if other.zero_width > self.zero_width:
            self._fold(other.zero_width)
        self._cap()

    def copy(self) -> DriftSketch:
        return DriftSketch(self.zero_width, self.zero, dict(self.pos), dict(self.neg))

    def _fold(self, width: float) -> None:
        """Widen the zero band to ``width``: buckets wholly inside it count as zero."""
        self.zero_width = width
        for store in (self.pos, self.neg):
            for k in [k for k in store if upper_edge(k) <= width]:
                self.zero += store.pop(k)

    def _cap(self) -> None:
        while len(self.pos) + len(self.neg) > MAX_BUCKETS:
            smallest = min(min(self.pos, default=MAX_KEY + 1), min(self.neg, default=MAX_KEY + 1))
            self._fold(upper_edge(smallest))

    def cells(self) -> list[tuple[Cell, int]]:
        """(cell, count) along the real line, left to right, without empty cells."""
        out: list[tuple[Cell, int]] = [((-1, -k), self.neg[k]) for k in sorted(self.neg, reverse=True)]
        if self.zero:
            out.append(((0, 0), self.zero))
        out.extend(((1, k), self.pos[k]) for k in sorted(self.pos))
        return out

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "pos": {str(k): n for k, n in sorted(self.pos.items())},
            "neg": {str(k): n for k, n in sorted(self.neg.items())},
        }
        if self.zero or self.zero_width:
            doc["zero"] = self.zero
            doc["zero_width"] = self.zero_width
        return doc


def _store(doc: Mapping[str, Any], key: str, where: str) -> dict[int, int]:
    raw = doc.get(key, {})
    if not isinstance(raw, Mapping):
        raise FormatError(f"{where}: {key} must be an object of bucket -> count")
    out: dict[int, int] = {}
    for k, n in raw.items():
        try:
            idx = int(k) if isinstance(k, str) and len(k) <= 6 else None
        except ValueError:
            idx = None
        if idx is None or abs(idx) > MAX_KEY:
            raise FormatError(
                f"{where}: {key} has a bad bucket {str(k)[:20]!r} (a whole number to {MAX_KEY})"
            )
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_COUNT:
            raise FormatError(f"{where}: {key}.{idx} must be a whole number from 0 to {MAX_COUNT}")
        if n:
            out[idx] = out.get(idx, 0) + n
    return out


def parse_sketch(doc: Any, where: str) -> DriftSketch:
    """One sketch from its JSON; :class:`FormatError` says what is wrong and where."""
    if not isinstance(doc, Mapping):
        raise FormatError(f"{where}: a drift sketch must be an object")
    unknown = set(doc) - {"zero_width", "zero", "pos", "neg"}
    if unknown:
        raise FormatError(f"{where}: unknown sketch field {sorted(map(str, unknown))[0][:40]!r}")
    width = doc.get("zero_width", 0)
    if isinstance(width, bool) or not isinstance(width, int | float) or not (0 <= width <= MAX_ZERO_WIDTH):
        raise FormatError(f"{where}: zero_width must be a number from 0 to {MAX_ZERO_WIDTH:g}")
    zero = doc.get("zero", 0)
    if isinstance(zero, bool) or not isinstance(zero, int) or not 0 <= zero <= MAX_COUNT:
        raise FormatError(f"{where}: zero must be a whole number from 0 to {MAX_COUNT}")
    pos, neg = _store(doc, "pos", where), _store(doc, "neg", where)
    if len(pos) + len(neg) > MAX_BUCKETS:
        raise FormatError(f"{where}: {len(pos) + len(neg)} buckets, at most {MAX_BUCKETS}")
    sketch = DriftSketch(0.0, zero, pos, neg)
    if width:
        sketch._fold(float(width))
    return sketch


def valid_feature(name: Any) -> bool:
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_FEATURE_NAME
        and all(c.isascii() and (c.isalnum() or c in "._:-") for c in name)
    )


def parse_drift(doc: Any, where: str, *, max_features: int = MAX_FEATURES) -> dict[str, DriftSketch]:
    """``{feature: sketch}`` (a metrics message's ``drift``, or a manifest's ``drift_reference``):
    feature names of letters, digits, '.', '_', ':', '-'; at most ``max_features`` of them."""
    if doc is None:
        return {}
    if not isinstance(doc, Mapping):
        raise FormatError(f"{where}: drift must be an object of feature -> sketch")
    if len(doc) > max_features:
        raise FormatError(f"{where}: drift has {len(doc)} features, at most {max_features}")
    out: dict[str, DriftSketch] = {}
    for name, sketch in doc.items():
        if not valid_feature(name):
            raise FormatError(f"{where}: drift has a bad feature name {str(name)[:40]!r}")
        out[name] = parse_sketch(sketch, f"{where}: drift.{name}")
    return out
