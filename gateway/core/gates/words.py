"""A verdict in words, for the dashboard timeline, ``gate status``, alerts and the audit log:
"errors 2.9 % (at least 2.1 %), baseline 1.0 %, margin +1 point: worse"."""

from __future__ import annotations

from gateway.core.gates.table import Criterion, Kind, Unit, family
from gateway.core.gates.values import Verdict

ANSWER = {"worse": "worse", "no_worse": "no worse", "undecided": "undecided"}


def value_text(unit: Unit, x: float) -> str:
    """A number in a criterion's unit, for people."""
    if unit == Unit.RATE:
        return f"{x * 100:.1f} %"
    if unit == Unit.PERCENT:
        return f"{x:.0f} %"
    if unit == Unit.LOG_MS:
        return f"{x:.0f} ms"
    if unit == Unit.CELSIUS:
        return f"{x:.1f} °C"
    if unit == Unit.RATIO:
        return f"{x:.2f}x"
    return f"{x:.2f}"


def _step(unit: Unit, x: float) -> str:
    """A margin: how much worse is allowed, in the unit's own steps."""
    if unit == Unit.RATE:
        pts = x * 100
        return f"{pts:+g} point" + ("" if abs(pts) == 1 else "s")
    if unit == Unit.PERCENT:
        return f"{x:+g} points"
    if unit == Unit.CELSIUS:
        return f"{x:+g} °C"
    if unit in (Unit.LOG_MS, Unit.RATIO):
        return f"{x:g}x"
    return f"{x:+g}"


def _bound(c: Criterion, v: Verdict, shift: float, scale: float) -> str:
    unit = Unit.RATIO if c.kind == Kind.RELATIVE and c.unit == Unit.LOG_MS else c.unit
    lo = v.lower * scale + shift if v.lower is not None else None
    hi = v.upper * scale + shift if v.upper is not None else None
    if unit in (Unit.RATE, Unit.RATIO, Unit.PERCENT, Unit.SCORE):  # none of these goes below 0
        lo = max(lo, 0.0) if lo is not None else None
    worse_high = c.higher_is_worse
    if v.result == "worse" and lo is not None and hi is not None:
        return f"at least {value_text(unit, lo)}" if worse_high else f"at most {value_text(unit, hi)}"
    if v.result == "no_worse" and lo is not None and hi is not None:
        return f"at most {value_text(unit, hi)}" if worse_high else f"at least {value_text(unit, lo)}"
    if lo is not None and hi is not None:
        return f"between {value_text(unit, lo)} and {value_text(unit, hi)}"
    return ""


def _paren(c: Criterion, v: Verdict, shift: float) -> str:
    """The bound in parentheses, or nothing when the verdict carries none (an older record)."""
    bound = _bound(c, v, shift, 1.0)
    return f" ({bound})" if bound else ""


def say(v: Verdict) -> str:
    c = family(v.criterion)
    answer = ANSWER.get(str(v.result), str(v.result))
    if c is None:
        return f"{v.criterion}: {answer}"
    what = c.words + (f" {v.criterion.split(':', 1)[1]!r}" if ":" in v.criterion else "")
    if v.candidate is None:
        limit = (
            f" ({'margin' if c.kind == Kind.RELATIVE else 'limit'} {_limit(c, v)})"
            if v.limit is not None
            else ""
        )
        return f"{what}: {v.note or 'not enough data yet'}{limit}: {answer}"
    if c.kind == Kind.ALERT:  # input drift 'brightness': PSI 0.31 against the site's past, ...
        against = f" {v.note}" if v.note else ""
        return f"{what}: PSI {v.candidate:.2f}{against}, alert at {v.limit or 0.0:g}: {answer}"
    if c.kind == Kind.SHARE:
        bad = v.samples.get("failed", v.samples.get("silent", 0))
        n = v.samples.get("devices", v.samples.get("runners", 0))
        return f"{what} {bad} of {n}{_paren(c, v, 0.0)}, limit {value_text(c.unit, v.limit or 0.0)}: {answer}"
    if c.stage:  # "agreement 95.1 % (at most 96.2 %), minimum 97 %: worse; person->car 31"
        pairs = f"; {v.note}" if v.note else ""
        return f"{what} {value_text(c.unit, v.candidate)}{_paren(c, v, 0.0)}, minimum {_limit(c, v)}: {answer}{pairs}"
    if c.kind == Kind.ABSOLUTE:
        return f"{what} {value_text(c.unit, v.candidate)}{_paren(c, v, 0.0)}, limit {_limit(c, v)}: {answer}"
    if c.unit == Unit.LOG_MS:  # a ratio of latencies
        of = f" the baseline's {v.baseline:.0f} ms" if v.baseline is not None else " the baseline"
        return f"{what} {v.candidate:.2f}x{of}{_paren(c, v, 0.0)}, margin {_limit(c, v)}: {answer}"
    if c.form == "ratio":
        return f"{what} {v.candidate:.2f}x expected{_paren(c, v, 0.0)}, margin {_limit(c, v)}: {answer}"
    base = v.baseline or 0.0
    shown = f"{what} {value_text(c.unit, base + v.candidate)}{_paren(c, v, base)}"
    return f"{shown}, baseline {value_text(c.unit, base)}, margin {_limit(c, v)}: {answer}"


def _limit(c: Criterion, v: Verdict) -> str:
    x = v.limit or 0.0
    if c.kind == Kind.RELATIVE:
        return _step(c.unit, x)
    return value_text(c.unit, x)


def name(v: Verdict) -> str:
    """A criterion for people, in a list: "CPU (cpu_rise_percent)", "CPU over its limit (max_cpu_percent)"."""
    c = family(v.criterion)
    if c is None:
        return v.criterion
    what = c.words + (f" {v.criterion.split(':', 1)[1]!r}" if ":" in v.criterion else "")
    if c.kind == Kind.ABSOLUTE and c.higher_is_worse:
        what += " over its limit"
    return f"{what} ({v.criterion})"  # the row's name: what to look up in the README and the config


def say_short(v: Verdict) -> str:
    """The criterion in words and its answer, for a list: "errors: undecided"."""
    c = family(v.criterion)
    what = c.words if c is not None else v.criterion
    if ":" in v.criterion:
        what += f" {v.criterion.split(':', 1)[1]!r}"
    return f"{what}: {ANSWER.get(str(v.result), str(v.result))}"
