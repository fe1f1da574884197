"""Line charts as SVG text, drawn on the server: no chart library, no CDN, no build step.

:func:`line_chart` takes series of (time, value) points and horizontal limits and returns one
``<svg>`` element sized by its ``viewBox`` (it scales to any width: a phone's or a desk's).
Points with no value leave a gap. A limit is a dashed horizontal line with its label; a limit
that follows another series (the baseline plus an allowed rise) is a dashed series. The newest
point of each series is a dot; ``data-points`` on the ``<svg>`` counts the first series' points
(the browser test reads it). The legend is the page's (one per group of charts). Every text is escaped. Pure: values in, text out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

Format = Callable[[float], str]

COLOURS = {"candidate": "#1f6feb", "baseline": "#8b949e", "limit": "#d1242f", "other": "#9a6700"}


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[float, float | None]]  # (POSIX time, value), oldest first
    role: str = "candidate"  # candidate, baseline, limit, other: colour and line style
    dashed: bool = False
    faint: bool = False  # a second line of the same role (p50 under p95)


@dataclass(frozen=True)
class Limit:
    label: str
    value: float


@dataclass(frozen=True)
class Box:
    width: int = 360
    height: int = 170
    left: int = 46
    right: int = 8
    top: int = 22
    bottom: int = 20

    @property
    def plot_w(self) -> int:
        return self.width - self.left - self.right

    @property
    def plot_h(self) -> int:
        return self.height - self.top - self.bottom


def _nice_top(value: float) -> float:
    """The smallest 1-2-2.5-5 x 10^n at or above ``value`` (a round top for the y axis)."""
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        top = step * 10**exp
        if top >= value * 0.999:
            return top
    return 10 ** (exp + 1)


def _runs(points: Sequence[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Consecutive points with values (a missing value breaks the line)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for t, v in points:
        if v is None or not math.isfinite(v):
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((t, v))
    return [r for r in runs if r]


def _time_label(seconds_before_end: float) -> str:
    s = round(seconds_before_end)
    if s <= 0:
        return "last"
    if s < 120:
        return f"-{s} s"
    if s < 7200:
        return f"-{round(s / 60)} min"
    return f"-{round(s / 3600)} h"


def line_chart(
    title: str,
    series: Sequence[Series],
    limits: Sequence[Limit] = (),
    *,
    fmt: Format = lambda v: f"{v:g}",
    box: Box = Box(),
) -> str:
    """One chart: the series over time on shared axes, the limits across it."""
    values = [v for s in series for _, v in s.points if v is not None and math.isfinite(v)]
    values += [lim.value for lim in limits if math.isfinite(lim.value)]
    times = [t for s in series for t, v in s.points if v is not None]
    top = _nice_top(max(values, default=0.0) * 1.08)
    t0, t1 = (min(times), max(times)) if times else (0.0, 1.0)
    span = (t1 - t0) or 1.0

    def x(t: float) -> float:
        return box.left + (box.plot_w * (t - t0) / span if t1 > t0 else box.plot_w / 2)

    def y(v: float) -> float:
        return box.top + box.plot_h * (1 - min(max(v, 0.0), top) / top)

    first = series[0] if series else None
    count = sum(1 for _, v in first.points if v is not None) if first else 0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {box.width} {box.height}" '
        f'class="chart" role="img" aria-label="{escape(title)}" data-points="{count}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{box.left}" y="14" font-size="12" font-weight="600" fill="#24292f">{escape(title)}</text>',
    ]
    for i in range(5):  # y grid and labels: 0, 1/4 .. top
        v = top * i / 4
        yy = y(v)
        out.append(
            f'<line x1="{box.left}" y1="{yy:.1f}" x2="{box.left + box.plot_w}" y2="{yy:.1f}" '
            f'stroke="#d0d7de" stroke-width="{1 if i == 0 else 0.5}"/>'
        )
        out.append(
            f'<text x="{box.left - 4}" y="{yy + 3.5:.1f}" font-size="9.5" text-anchor="end" '
            f'fill="#57606a">{escape(fmt(v))}</text>'
        )
    if times:
        bottom = box.height - 5
        out.append(
            f'<text x="{box.left}" y="{bottom}" font-size="9.5" fill="#57606a">{_time_label(t1 - t0)}</text>'
        )
        out.append(
            f'<text x="{box.left + box.plot_w}" y="{bottom}" font-size="9.5" text-anchor="end" '
            f'fill="#57606a">{_time_label(0)}</text>'
        )
    else:
        out.append(
            f'<text x="{box.left + box.plot_w / 2}" y="{box.top + box.plot_h / 2}" font-size="11" '
            'text-anchor="middle" fill="#57606a">no windows yet</text>'
        )
    for lim in limits:
        yy = y(lim.value)
        colour = COLOURS["limit"]
        out.append(
            f'<line class="limit" x1="{box.left}" y1="{yy:.1f}" x2="{box.left + box.plot_w}" '
            f'y2="{yy:.1f}" stroke="{colour}" stroke-width="1" stroke-dasharray="5 3"/>'
        )
        out.append(
            f'<text x="{box.left + box.plot_w - 2}" y="{yy - 3:.1f}" font-size="9" text-anchor="end" '
            f'fill="{colour}">{escape(lim.label)} {escape(fmt(lim.value))}</text>'
        )
    for s in series:
        out.extend(_draw(s, x, y))
    out.append("</svg>")
    return "".join(out)


def _draw(s: Series, x: Callable[[float], float], y: Callable[[float], float]) -> list[str]:
    colour = COLOURS.get(s.role, COLOURS["other"])
    dash = ' stroke-dasharray="4 3"' if s.dashed else ""
    width = 1.2 if s.faint or s.dashed else 2
    opacity = ' stroke-opacity="0.6"' if s.faint else ""
    out = []
    runs = _runs(s.points)
    for run in runs:
        if len(run) == 1:  # one point: a dot, or a short dash for a limit
            t, v = run[0]
            if s.dashed:
                out.append(
                    f'<line x1="{x(t) - 6:.1f}" y1="{y(v):.1f}" x2="{x(t) + 6:.1f}" y2="{y(v):.1f}" '
                    f'stroke="{colour}" stroke-width="{width}"/>'
                )
            else:
                out.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2" fill="{colour}"/>')
            continue
        pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
        out.append(
            f'<polyline class="{escape(s.role)}" points="{pts}" fill="none" stroke="{colour}" '
            f'stroke-width="{width}"{dash}{opacity} stroke-linejoin="round"/>'
        )
    if runs and not s.dashed:
        t, v = runs[-1][-1]
        out.append(f'<circle class="last" cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>')
    return out
