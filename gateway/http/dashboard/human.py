"""Numbers for people: "3 min ago", "85.2 GB", "1.4 MB/s", "45 %". Pure; ``None`` becomes a dash.

The dashboard shows only what these return, never a Python value: no ``None``, ``False``, epoch
seconds or byte counts reach the page.
"""

from __future__ import annotations

from gateway.core import human as core_human

DASH = "–"


def size(n: float | None) -> str:
    """Bytes as everywhere else (:func:`gateway.core.human.size`: "262.1 kB", "30.0 MB")."""
    return DASH if n is None else core_human.size(n)


def rate(bytes_per_s: float | None) -> str:
    return DASH if bytes_per_s is None else size(bytes_per_s) + "/s"


def duration(seconds: float | None) -> str:
    """A span, to the two largest units that matter: "14 s", "3 min", "2 h 5 min", "3 days"."""
    if seconds is None:
        return DASH
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    minutes, sec = divmod(s, 60)
    if minutes < 10:
        return f"{minutes} min {sec} s" if sec else f"{minutes} min"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    word = "day" if days == 1 else "days"
    return f"{days} {word} {hours} h" if hours and days < 7 else f"{days} {word}"


def ago(at: float | None, now: float) -> str:
    """When something happened, from now: "just now", "3 min ago", "in 2 h", or "never"."""
    if at is None or at <= 0:
        return "never"
    delta = now - at
    if abs(delta) < 5:
        return "just now"
    return f"{duration(delta)} ago" if delta > 0 else f"in {duration(-delta)}"


def percent(value: float | None, digits: int = 0) -> str:
    """A value already in percent: 45.2 -> "45 %"."""
    return DASH if value is None else f"{value:.{digits}f} %"


def share(value: float | None) -> str:
    """A fraction as a percentage with the precision that small rates need: 0.0123 -> "1.23 %"."""
    if value is None:
        return DASH
    pct = value * 100
    return f"{pct:.2f} %" if abs(pct) < 10 else f"{pct:.1f} %"


def number(value: float | None, unit: str = "") -> str:
    """A measurement with its unit, three significant digits: 41.37 ms -> "41.4 ms"."""
    if value is None:
        return DASH
    return f"{_sig3(value)} {unit}".strip()


def _sig3(value: float) -> str:
    """About three significant digits, never in exponent form."""
    size_ = abs(value)
    if size_ >= 100:
        return f"{value:,.0f}"
    text = (
        f"{value:.1f}" if size_ >= 10 else f"{value:.2f}" if size_ >= 0.01 or size_ == 0 else f"{value:.2g}"
    )
    return text.rstrip("0").rstrip(".") if "." in text and "e" not in text else text


def yes_no(flag: object) -> str:
    return "yes" if flag else "no"
