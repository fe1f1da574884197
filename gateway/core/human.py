"""Figures for people: "3 min ago", "28.6 MB", "2 h 5 min", "1.2 MB/s". Pure; None becomes "-".

The commands (and the dashboard) print these; ``--json`` keeps the raw numbers (Unix times, bytes) for scripts.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

DASH = "-"
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*(min|[smhdw])")


def size(n: float | None) -> str:
    """Bytes in decimal units (as disks and uplinks are sold): 512 B, 85.2 GB."""
    if n is None:
        return DASH
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def rate(bps: float | None) -> str:
    return DASH if not bps else f"{size(bps)}/s"


def duration(seconds: float | None) -> str:
    """A span, to the two largest units: 45 s, 3 min 20 s, 2 h 5 min, 3 d 4 h."""
    if seconds is None:
        return DASH
    if 0 < seconds < 9.95 and seconds != int(seconds):
        return f"{seconds:.1f} s"
    s = round(max(0.0, float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min" + (f" {s % 60} s" if s % 60 and s < 600 else "")
    if s < 86400:
        return f"{s // 3600} h" + (f" {s % 3600 // 60} min" if s % 3600 // 60 else "")
    return f"{s // 86400} d" + (f" {s % 86400 // 3600} h" if s % 86400 // 3600 else "")


def ago(ts: float | None, now: float) -> str:
    """A past instant relative to ``now`` ("just now", "3 min ago"); a future one as "in 2 d"."""
    if ts is None:
        return DASH
    delta = now - float(ts)
    if abs(delta) < 1:
        return "just now"
    return f"{duration(delta)} ago" if delta > 0 else f"in {duration(-delta)}"


def when(ts: float | None, now: float) -> str:
    """An instant as UTC date and time with its distance from now: 2026-12-02 16:54 UTC (3 min ago)."""
    if ts is None:
        return DASH
    return f"{datetime.fromtimestamp(float(ts), UTC):%Y-%m-%d %H:%M UTC} ({ago(ts, now)})"


def wave(index: object) -> str:
    """A wave for people, numbered from 1 ("wave 1" is the first); the gates store and the JSON
    documents carry the 0-based index. A missing index is a dash."""
    return f"wave {index + 1}" if isinstance(index, int) and not isinstance(index, bool) else "wave -"


def yes_no(flag: object) -> str:
    return DASH if flag is None else ("yes" if flag else "no")


def text(value: object) -> str:
    """Any value as a person reads it: None is "-", never "None"; True/False are yes/no."""
    if value is None or value == "":
        return DASH
    if isinstance(value, bool):
        return yes_no(value)
    return str(value)


def parse_duration(text: str) -> float:
    """A span a person types: ``90``, ``90s``, ``30m``, ``12h``, ``7d``, ``2w``, ``1h30m`` -> seconds
    (above 0). ValueError says what is expected."""
    t = text.strip().lower()
    try:
        seconds = float(t)
    except ValueError:
        parts = _SPAN.findall(t)
        if not parts or _SPAN.sub("", t).strip():
            raise ValueError(
                f"{text!r} is not a duration: a number of seconds, or e.g. 90s, 30m, 12h, 7d, 1h30m"
            ) from None
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{text!r} is not a duration above 0")
    return seconds
