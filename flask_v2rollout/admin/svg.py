"""Small server-side SVG charts: no JavaScript, no CDN, fine under a strict CSP.

Colours come from CSS classes (``line-<name>``), so the stylesheet owns the look.
Data is drawn as it is: a stepped line holds each value for the minutes it covers,
``None`` leaves a gap rather than a misleading zero, and a lone minute is still a
visible step. Markers (flag changes, rollbacks, alerts) are vertical rules with a
tooltip; a target is a shaded band.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, WIDE, HEIGHT = 440, 900, 160
RIGHT, TOP, BOTTOM = 10, 10, 22
CHAR_W = 6.6  # width of one tick-label character at 11px
#: how far past the last drawn minute a marker is still shown (at the right end)
CURRENT_MINUTE = 120.0
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


@dataclass(frozen=True)
class Marker:
    """A moment on the time axis: ``kind`` (change, rollback, alert) picks its CSS class."""

    at: float
    kind: str
    label: str


@dataclass(frozen=True)
class Band:
    """A target region of a chart (``low``/``high`` None: open on that side), drawn behind the data."""

    low: float | None
    high: float | None
    label: str


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
               unit: str = "", y_max: float | None = None, wide: bool = False, step: float | None = None,
               band: Band | None = None, markers: Sequence[Marker] = ()) -> Markup:
    """An accessible ``<svg role="img">`` plotting ``lines`` over ``x_range`` (epoch seconds).

    ``step`` (seconds a point covers) draws stepped lines; ``band`` shades the target and
    keeps its limit in view; ``markers`` are vertical rules at flag changes, rollbacks, alerts.
    """
    x0, x1 = x_range
    span = max(x1 - x0, 1.0)
    values = [v for line in lines for _, v in line.points if v is not None and math.isfinite(v)]
    limits = [e for e in ((band.low, band.high) if band else ()) if e is not None]
    # four gridline steps of a readable size (1, 2, 2.5 or 5 × 10^k) above the highest value (and the target)
    highest = max(values + [e * 1.25 for e in limits], default=0.0)
    top = 4 * nice_ceiling(highest / 4) if highest > 0 else 1.0
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
    if band is not None:
        summary += f"; target {band.label}"
    if markers:
        summary += "; " + "; ".join(f"{time.strftime('%H:%M', time.gmtime(m.at))} {m.label}" for m in markers)
    parts = [
        f'<svg class="chart" id="{chart_id}" viewBox="0 0 {width} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" preserveAspectRatio="xMidYMid meet">',
        f'<title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(summary)}</desc>',
    ]
    if band is not None:
        y_top = py(band.high if band.high is not None else top)
        y_bottom = py(band.low if band.low is not None else 0.0)
        parts.append(f'<rect class="target-band" x="{left}" width="{plot_w}" y="{y_top:.1f}" '
                     f'height="{max(0.0, y_bottom - y_top):.1f}"><title>target {escape(band.label)}</title></rect>')
        for limit in limits:
            if limit <= top:
                parts.append(f'<line class="target-line" x1="{left}" x2="{width - RIGHT}" '
                             f'y1="{py(limit):.1f}" y2="{py(limit):.1f}"/>')
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
        parts.extend(_draw_steps(line, px, py, step) if step else _draw(line, px, py))
    parts.extend(_markers(markers, px, x0, x1, TOP, TOP + plot_h))
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


Scale = Callable[[float], float]


def _draw_steps(line: Line, px: Scale, py: Scale, step: float) -> list[str]:
    """Each value held for the ``step`` seconds it covers; consecutive values joined, a gap left open."""
    out: list[str] = []
    css = f"line-{escape(line.name)}"
    d: list[str] = []
    previous_end: float | None = None
    for t, v in line.points:
        if v is None or not math.isfinite(v):
            previous_end = None
            continue
        y = py(v)
        if previous_end is not None and abs(previous_end - t) < 1e-6:
            d.append(f"V{y:.1f} H{px(t + step):.1f}")
        else:
            d.append(f"M{px(t):.1f} {y:.1f} H{px(t + step):.1f}")
        previous_end = t + step
    if d:
        out.append(f'<path class="series step {css}" d="{" ".join(d)}"/>')
    return out


def _markers(markers: Sequence[Marker], px: Scale, x0: float, x1: float, y0: float, y1: float) -> list[str]:
    out = []
    for m in markers:
        # the minute still being counted is not drawn; a change made in it shows at the right end
        if not x0 <= m.at <= x1 + CURRENT_MINUTE:
            continue
        x = px(min(m.at, x1))
        stamp = time.strftime("%H:%M", time.gmtime(m.at))
        out.append(f'<g class="marker marker-{escape(m.kind)}"><title>{stamp} {escape(m.label)}</title>'
                   f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y0}" y2="{y1}"/>'
                   f'<path d="M{x - 4:.1f} {y0 - 1} L{x + 4:.1f} {y0 - 1} L{x:.1f} {y0 + 6}Z"/></g>')
    return out


def band_chart(chart_id: str, title: str, points: Sequence[tuple[float, float | None, float | None, float | None]],
               x_range: tuple[float, float], *, thresholds: Sequence[tuple[float, str]] = (),
               reference: float | None = None, floor: float | None = None,
               fmt: Callable[[float | None], str] = number) -> Markup:
    """An estimate over time with its interval as a band and the criterion's thresholds as dashed lines.

    ``points`` are (time, estimate, lower, upper); ``reference`` is "no difference" (0 or 100 %),
    ``floor`` the lowest value that means anything (0 for a ratio). The y range fits the settled
    estimates and the thresholds; a band wider than that is clipped, not rescaled.
    """
    x0, x1 = x_range
    span = max(x1 - x0, 1.0)
    width, height = WIDTH, HEIGHT
    seen = [p for _, p, _, _ in points if p is not None and math.isfinite(p)]
    # the first readings of a stage swing widely: the axis fits the last three quarters, and what lies
    # beyond the axis is drawn at its end
    settled = seen[len(seen) // 4:] if len(seen) >= 4 else seen
    anchors = settled + [t for t, _ in thresholds] + ([reference] if reference is not None else [])
    if not anchors:
        anchors = [0.0, 1.0]
    low, high = min(anchors), max(anchors)
    pad = max((high - low) * 0.25, abs(high) * 0.02, 1e-3)
    step = nice_ceiling((high - low + 2 * pad) / 4)
    low = math.floor((low - pad) / step) * step
    if floor is not None:
        low = max(low, floor)
    high = low + 4 * step
    while high < max(anchors):
        high += step
    ticks = [low + (high - low) * i / 4 for i in range(5)]
    labels = [fmt(v) for v in ticks]
    left = round(12 + CHAR_W * max(len(label) for label in labels))
    plot_w, plot_h = width - left - RIGHT, height - TOP - BOTTOM

    def px(t: float) -> float:
        return left + (t - x0) / span * plot_w

    def py(v: float) -> float:
        return TOP + plot_h - (min(max(v, low), high) - low) / (high - low) * plot_h

    latest = next(((p, lo, hi) for _, p, lo, hi in reversed(points) if p is not None), None)
    summary = ("no data yet" if latest is None else
               f"latest {fmt(latest[0])}, interval {fmt(latest[1])} to {fmt(latest[2])}")
    if thresholds:
        summary += "; thresholds " + ", ".join(fmt(t) for t, _ in thresholds)
    parts = [
        f'<svg class="chart band-chart" id="{chart_id}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" preserveAspectRatio="xMidYMid meet">',
        f'<title id="{chart_id}-t">{escape(title)}</title><desc id="{chart_id}-d">{escape(summary)}</desc>',
    ]
    for v, label in zip(ticks, labels, strict=True):
        y = py(v)
        parts.append(f'<line class="grid" x1="{left}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="tick" x="{left - 6}" y="{y + 3.5:.1f}" text-anchor="end">{escape(label)}</text>')
    for t in _x_ticks(x0, x1):
        parts.append(f'<text class="tick" x="{px(t):.1f}" y="{height - 6}" text-anchor="middle">'
                     f'{time.strftime("%H:%M", time.gmtime(t))}</text>')
    runs: list[list[tuple[float, float, float, float]]] = [[]]
    for t, p, lo, hi in points:
        if p is None or lo is None or hi is None:
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((t, p, lo, hi))
    for run in (r for r in runs if r):
        upper = " L".join(f"{px(t):.1f} {py(hi):.1f}" for t, _, _, hi in run)
        lower = " L".join(f"{px(t):.1f} {py(lo):.1f}" for t, _, lo, _ in reversed(run))
        parts.append(f'<path class="interval-band" d="M{upper} L{lower}Z"/>')
    if reference is not None:
        y = py(reference)
        parts.append(f'<line class="reference" x1="{left}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
    for value, kind in thresholds:
        y = py(value)
        parts.append(f'<line class="threshold threshold-{escape(kind)}" x1="{left}" x2="{width - RIGHT}" '
                     f'y1="{y:.1f}" y2="{y:.1f}"><title>{escape(kind)} threshold {escape(fmt(value))}</title></line>')
        parts.append(f'<text class="threshold-label threshold-{escape(kind)}" x="{width - RIGHT - 2}" '
                     f'y="{y - 3:.1f}" text-anchor="end">{escape(kind)} {escape(fmt(value))}</text>')
    for run in (r for r in runs if r):
        if len(run) == 1:
            t, p, _, _ = run[0]
            parts.append(f'<circle class="estimate" cx="{px(t):.1f}" cy="{py(p):.1f}" r="2.5"/>')
        else:
            d = "M" + " L".join(f"{px(t):.1f} {py(p):.1f}" for t, p, _, _ in run)
            parts.append(f'<path class="estimate" d="{d}"/>')
    if latest is None:
        parts.append(f'<text class="empty" x="{left + plot_w / 2:.0f}" y="{TOP + plot_h / 2:.0f}" '
                     'text-anchor="middle">no data yet</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
