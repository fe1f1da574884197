"""Shadow agreement: how often a candidate running in shadow gives the same top-1 label as the
active model on the same frames, as a device reports it per metrics message (pure).

A device in the shadow stage runs both models on each frame and adds to its shadow message
(``shadow: true``)::

    "agreement": {
        "frames": 1200,                                # frames both models labelled
        "agree": 1150,                                 # frames with the same top-1 label
        "classes": {"person": [700, 690], "car": [400, 370], ...},  # active label c: [frames, agreed]
        "pairs": {"person->car": 3, "car->person": 27, ...},        # active->candidate, disagreements
        "conf_diff_mean": -0.012                       # candidate's confidence minus the active's
    }

``classes`` is the smallest shape that lets the gate judge each class (a rare class swapped is seen
there when the whole barely moves); ``pairs`` is capped at :data:`MAX_PAIRS` (a device sends its
commonest). What the gate does with it: :mod:`gateway.core.gates.paired` (the evidence) and the
``shadow_agreement`` rows of :mod:`gateway.core.gates.table`; what a window keeps:
:class:`AgreementSums`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.errors import FormatError

MAX_CLASSES = 64
MAX_CLASS_NAME = 64
MAX_PAIRS = 32  # confusion pairs in one message
MAX_WINDOW_PAIRS = 64  # confusion pairs one device's window keeps (the first seen; the rest uncounted)
MAX_FRAMES = 10**9
ARROW = "->"


@dataclass(frozen=True)
class Agreement:
    """One message's agreement on the same frames."""

    frames: int
    agree: int
    classes: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # active label -> (n, agreed)
    pairs: Mapping[str, int] = field(default_factory=dict)  # "active->candidate" -> frames
    conf_diff_mean: float | None = None

    def to_json(self) -> dict[str, Any]:
        """As the device sent it (the journaled sample carries it upstream)."""
        out: dict[str, Any] = {"frames": self.frames, "agree": self.agree}
        if self.classes:
            out["classes"] = {k: [n, m] for k, (n, m) in self.classes.items()}
        if self.pairs:
            out["pairs"] = dict(self.pairs)
        if self.conf_diff_mean is not None:
            out["conf_diff_mean"] = self.conf_diff_mean
        return out


def _whole(v: Any, what: str, where: str, hi: int = MAX_FRAMES) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > hi:
        raise FormatError(f"{where}: {what} must be a whole number from 0 to {hi}, got {str(v)[:40]!r}")
    return v


def _name(v: Any, what: str, where: str) -> str:
    if not isinstance(v, str) or not v or len(v) > MAX_CLASS_NAME or ARROW in v:
        raise FormatError(f"{where}: {what} has a bad class name {str(v)[:40]!r}")
    return v


def _classes(doc: Any, frames: int, agree: int, where: str) -> dict[str, tuple[int, int]]:
    if not isinstance(doc, Mapping) or len(doc) > MAX_CLASSES:
        raise FormatError(f"{where}: agreement.classes must be an object of at most {MAX_CLASSES} classes")
    out: dict[str, tuple[int, int]] = {}
    for name, pair in doc.items():
        c = _name(name, "agreement.classes", where)
        if not isinstance(pair, list) or len(pair) != 2:
            raise FormatError(f"{where}: agreement.classes.{c} must be [frames, agreed]")
        n = _whole(pair[0], f"agreement.classes.{c}[0]", where)
        k = _whole(pair[1], f"agreement.classes.{c}[1]", where)
        if k > n:
            raise FormatError(f"{where}: agreement.classes.{c}: agreed ({k}) exceeds frames ({n})")
        out[c] = (n, k)
    if sum(n for n, _ in out.values()) > frames or sum(k for _, k in out.values()) > agree:
        raise FormatError(f"{where}: agreement.classes count more frames than agreement.frames/agree")
    return out


def _pairs(doc: Any, disagree: int, where: str) -> dict[str, int]:
    if not isinstance(doc, Mapping) or len(doc) > MAX_PAIRS:
        raise FormatError(f"{where}: agreement.pairs must be an object of at most {MAX_PAIRS} pairs")
    out: dict[str, int] = {}
    for key, n in doc.items():
        parts = key.split(ARROW) if isinstance(key, str) else []
        if len(parts) != 2 or parts[0] == parts[1]:
            raise FormatError(f"{where}: agreement.pairs key {str(key)[:40]!r} must be 'active->candidate'")
        a, b = (_name(p, "agreement.pairs", where) for p in parts)
        out[f"{a}{ARROW}{b}"] = _whole(n, f"agreement.pairs.{key}", where)
    if sum(out.values()) > disagree:
        raise FormatError(f"{where}: agreement.pairs count more frames than disagreed ({disagree})")
    return out


def parse_agreement(doc: Any, where: str) -> Agreement:
    """One message's ``agreement`` object; :class:`FormatError` names the field."""
    if not isinstance(doc, Mapping):
        raise FormatError(f"{where}: agreement must be an object")
    frames = _whole(doc.get("frames"), "agreement.frames", where)
    agree = _whole(doc.get("agree"), "agreement.agree", where)
    if agree > frames:
        raise FormatError(f"{where}: agreement.agree ({agree}) exceeds agreement.frames ({frames})")
    conf = doc.get("conf_diff_mean")
    if conf is not None and (
        isinstance(conf, bool)
        or not isinstance(conf, int | float)
        or not math.isfinite(conf)
        or abs(conf) > 1
    ):
        raise FormatError(f"{where}: agreement.conf_diff_mean must be a number from -1 to 1, got {conf!r}")
    return Agreement(
        frames,
        agree,
        _classes(doc.get("classes") or {}, frames, agree, where),
        _pairs(doc.get("pairs") or {}, frames - agree, where),
        None if conf is None else float(conf),
    )


@dataclass(slots=True)
class AgreementSums:
    """One device's agreement over a window (filled in place by the aggregator, read-only after)."""

    frames: int = 0
    agree: int = 0
    classes: dict[str, list[int]] = field(default_factory=dict)
    pairs: dict[str, int] = field(default_factory=dict)
    conf_sum: float = 0.0
    conf_w: int = 0

    def add(self, a: Agreement) -> None:
        self.frames += a.frames
        self.agree += a.agree
        for name, (n, k) in a.classes.items():
            mine = self.classes.setdefault(name, [0, 0])
            mine[0] += n
            mine[1] += k
        for key, n in a.pairs.items():
            if key in self.pairs or len(self.pairs) < MAX_WINDOW_PAIRS:
                self.pairs[key] = self.pairs.get(key, 0) + n
        if a.conf_diff_mean is not None and a.frames:
            self.conf_sum += a.conf_diff_mean * a.frames
            self.conf_w += a.frames

    def merge(self, other: AgreementSums) -> None:
        """Another device's sums added to these (a window's pool)."""
        self.add(
            Agreement(
                other.frames, other.agree, {k: (v[0], v[1]) for k, v in other.classes.items()}, other.pairs
            )
        )
        self.conf_sum += other.conf_sum
        self.conf_w += other.conf_w

    def as_message(self) -> dict[str, Any]:
        """The sums as one message's ``agreement`` (a recorded trace replays it)."""
        msg: dict[str, Any] = {"frames": self.frames, "agree": self.agree}
        if self.classes:
            msg["classes"] = {k: list(v) for k, v in self.classes.items()}
        if self.pairs:
            msg["pairs"] = top_pairs(self.pairs, MAX_PAIRS)
        if self.conf_w:
            msg["conf_diff_mean"] = max(-1.0, min(1.0, self.conf_sum / self.conf_w))
        return msg


def pooled(sums: Iterable[AgreementSums | None]) -> dict[str, Any] | None:
    """The devices' sums of one window as one ``agreement`` (what the uplink's window carries), or
    None when none of them compared frames."""
    total = AgreementSums()
    for one in sums:
        if one is not None:
            total.merge(one)
    return total.as_message() if total.frames else None


def top_pairs(pairs: Mapping[str, int], n: int) -> dict[str, int]:
    """The ``n`` commonest confusion pairs, commonest first (ties by name)."""
    return dict(sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:n])
