"""A small server-side SVG line chart: no JavaScript, no CDN, fine under a strict CSP.

Colours come from CSS classes (``line-<name>``), so the stylesheet owns the look;
``None`` values break a line rather than drawing a misleading zero.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, WIDE, HEIGHT = 440, 900, 160
RIGHT, TOP, BOTTOM = 10, 10, 22
CHAR_W = 6.6  # width of one tick-label character at 11px
_X_STEPS = (300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400)


@dataclass(frozen=True)
class Line:
    """One series: ``name`` picks its CSS class; points are (epoch seconds, value or None)."""

    name: str
    label: str
    points: Sequence[tuple[float, float | None]]

    @property
    def latest(self) -> float | None:
        for _, value in reversed(self.points):
            if value is not None:
                return value
        return None


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10^k at or above ``value`` (axis tops people can read)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        top = step * 10.0**exponent
        if top >= value * (1 - 1e-9):
            return top
    return 10.0 ** (exponent + 1)


def number(value: float | None, unit: str = "") -> str:
    """Compact text for an axis or a legend: 1.2k, 3.5, 0.04; ``–`` for no data."""
    if value is None:
        return "–"
    if abs(value) >= 10_000:
        text = f"{value / 1000:.0f}k"
    elif abs(value) >= 1000:
        text = f"{value / 1000:.1f}k"
    elif abs(value) >= 100 or value == int(value):
        text = f"{value:.0f}"
    elif abs(value) >= 1:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2g}"
    return f"{text}{unit}"


def tick_label(value: float, step: float) -> str:
    """An axis label with just enough decimals to tell neighbouring ticks apart."""
    if step >= 1000:
        return number(value)
    decimals = max(0, math.ceil(-math.log10(step) - 1e-9))
    while decimals < 8 and abs(round(step * 10**decimals) - step * 10**decimals) > 1e-6:
        decimals += 1
    return f"{value:.{decimals}f}"


def line_chart(chart_id: str, title: str, lines: Sequence[Line], x_range: tuple[float, float], *,
               unit: str = "", y_max: float | None = None, wide: bool = False) -> Markup:
    """An accessible ``<svg role="img">`` plotting ``lines`` over ``x_range`` (epoch seconds)."""
    x0, x1 = x_range
    span = max(x1 - x0, 1.0)
    values = [v for line in lines for _, v in line.points if v is not None and math.isfinite(v)]
    # four gridline steps of a readable size (1, 2, 2.5 or 5 × 10^k) above the highest value
    top = 4 * nice_ceiling(max(values) / 4) if values else 1.0
    if y_max is not None:
        top = min(top, y_max)
    width = WIDE if wide else WIDTH
    ticks = [(top * i / 4, tick_label(top * i / 4, top / 4)) for i in range(5)]
    left = round(12 + CHAR_W * max(len(label) for _, label in ticks))
    plot_w, plot_h = width - left - RIGHT, HEIGHT - TOP - BOTTOM

    def px(t: float) -> float:
        return left + (t - x0) / span * plot_w

    def py(v: float) -> float:
        return TOP + plot_h - min(max(v, 0.0), top) / top * plot_h

    summary = "; ".join(f"{line.label} latest {number(line.latest, unit)}" for line in lines)
    parts = [
        f'<svg class="chart" id="{chart_id}" viewBox="0 0 {width} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" preserveAspectRatio="xMidYMid meet">',
        f'<title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(summary)}</desc>',
    ]
    for v, label in ticks:
        y = py(v)
        parts.append(f'<line class="grid" x1="{left}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{left - 6}" y="{y + 3.5:.1f}" text-anchor="end">{label}</text>')
    for t in _x_ticks(x0, x1):
        x = px(t)
        parts.append(f'<line class="grid grid-x" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{TOP + plot_h}"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
                     f'{time.strftime("%H:%M", time.gmtime(t))}</text>')
    for line in lines:
        parts.extend(_draw(line, px, py))
    if not values:
        parts.append(f'<text class="empty" x="{left + plot_w / 2:.0f}" y="{TOP + plot_h / 2:.0f}" '
                     'text-anchor="middle">no data yet</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _x_ticks(x0: float, x1: float) -> list[float]:
    step = next((s for s in _X_STEPS if (x1 - x0) / s <= 6), _X_STEPS[-1])
    first = math.ceil(x0 / step) * step
    return [float(t) for t in range(int(first), int(x1) + 1, step)]


def _draw(line: Line, px, py) -> list[str]:  # type: ignore[no-untyped-def]
    """A path per unbroken run; a lone point (between gaps) as a dot so it is not lost."""
    out: list[str] = []
    run: list[tuple[float, float]] = []
    css = f"line-{escape(line.name)}"

    def flush() -> None:
        if len(run) == 1:
            out.append(f'<circle class="dot {css}" cx="{run[0][0]:.1f}" cy="{run[0][1]:.1f}" r="2"/>')
        elif run:
            d = "M" + " L".join(f"{x:.1f} {y:.1f}" for x, y in run)
            out.append(f'<path class="series {css}" d="{d}"/>')
        run.clear()

    for t, v in line.points:
        if v is None or not math.isfinite(v):
            flush()
        else:
            run.append((px(t), py(v)))
    flush()
    return out
