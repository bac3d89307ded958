"""The dashboard's charts: five health charts from ``rollout.series()`` and one per guardrail from
``rollout.gate_history()``.

A day of per-minute points is merged into coarser buckets before drawing; rates
are re-derived from the summed counts (never averaged), and p95 shows the worst
minute of a bucket, since a latency spike is what an operator must not miss.
Every health chart carries the markers (flag changes, rollbacks, alerts) and,
where the gate states one, its target as a band.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from . import wording
from .svg import Band, Line, Marker, band_chart, line_chart

#: range key → (window passed to series(), minutes merged into one point)
RANGES: Mapping[str, tuple[str, int]] = {"1h": ("1h", 1), "6h": ("6h", 5), "24h": ("24h", 10)}
RANGE_NAMES: Mapping[str, str] = {"1h": "Last hour", "6h": "Last 6 hours", "24h": "Last day"}
ARMS = ("v1", "v2")


@dataclass(frozen=True)
class Chart:
    key: str
    title: str
    unit: str
    lines: tuple[Line, ...]
    x_range: tuple[float, float]
    y_max: float | None = None
    wide: bool = False
    step: float | None = None
    band: Band | None = None
    markers: tuple[Marker, ...] = ()

    @property
    def svg(self) -> Markup:
        return line_chart(f"chart-{self.key}", self.title, self.lines, self.x_range, unit=self.unit,
                          y_max=self.y_max, wide=self.wide, step=self.step, band=self.band, markers=self.markers)


def _pct(part: float, whole: float) -> float | None:
    return part / whole * 100.0 if whole else None


def _buckets(series: Sequence[Mapping[str, Any]], size: int) -> list[list[Mapping[str, Any]]]:
    return [list(series[i:i + size]) for i in range(0, len(series), size)]


def build_charts(series: Sequence[Mapping[str, Any]], bucket_minutes: int, *,
                 markers: Sequence[Marker] = (), targets: Mapping[str, wording.Target] | None = None) -> list[Chart]:
    """Calculations/min by version, p95, error rate, fallback rate and shadow agreement, as stepped lines."""
    if not series:
        return []
    step = bucket_minutes * 60.0
    marks = tuple(markers)
    goal = dict(targets or {})

    def band(key: str) -> Band | None:
        found = goal.get(key)
        return None if found is None else Band(found.low, found.high, found.text)

    buckets = _buckets(series, bucket_minutes)
    starts = [float(b[0]["minute"]) for b in buckets]
    x_range = (float(series[0]["minute"]), float(series[-1]["minute"]) + 60.0)

    def arm_points(arm: str, figure: Any) -> list[tuple[float, float | None]]:
        return [(t, figure([m["arms"][arm] for m in b])) for t, b in zip(starts, buckets, strict=True)]

    def per_min(rows: list[Mapping[str, Any]]) -> float:
        total: float = sum(r["calculations"] for r in rows)
        return total / len(rows)

    def worst_p95(rows: list[Mapping[str, Any]]) -> float | None:
        seen = [r["p95_ms"] for r in rows if r["p95_ms"] is not None]
        return max(seen) if seen else None

    def rate(count: str) -> Any:
        return lambda rows: _pct(sum(r[count] for r in rows), sum(r["calculations"] for r in rows))

    def agreement(rows: list[Mapping[str, Any]]) -> float | None:
        classes = [m["shadow"]["by_agreement"] for m in rows]
        agree = sum(c.get("EXACT", 0) + c.get("CLOSE", 0) for c in classes)
        return _pct(agree, agree + sum(c.get("MODERATE", 0) for c in classes))

    def by_arm(figure: Any) -> tuple[Line, ...]:
        return tuple(Line(arm, arm, arm_points(arm, figure)) for arm in ARMS)

    p95_title = "p95 duration" if bucket_minutes == 1 else "p95, worst minute"
    def no_calls_none(rows: list[Mapping[str, Any]]) -> float | None:
        """No calls in a bucket is a gap on the chart, not a minute of zero traffic drawn as a line."""
        value = per_min(rows)
        return value if value else None

    return [
        Chart("calculations", "Calculations per minute", "", by_arm(no_calls_none), x_range, wide=True, step=step,
              markers=marks),
        Chart("p95", p95_title, " ms", by_arm(worst_p95), x_range, step=step, band=band("p95"), markers=marks),
        Chart("errors", "Error rate", " %", by_arm(rate("errors")), x_range, 100.0, step=step, band=band("errors"),
              markers=marks),
        Chart("fallbacks", "v2 fallback rate", " %", (Line("v2", "v2", arm_points("v2", rate("fallbacks"))),),
              x_range, 100.0, step=step, band=band("fallbacks"), markers=marks),
        Chart("agreement", "Shadow agreement rate", " %",
              (Line("agreement", "agreement",
                    [(t, agreement(b)) for t, b in zip(starts, buckets, strict=True)]),), x_range, 100.0,
              step=step, band=band("agreement"), markers=marks),
    ]


def markers(audit: Sequence[Mapping[str, Any]], alert_events: Sequence[Mapping[str, Any]]) -> list[Marker]:
    """Flag changes (one marker per change, however many flags it set; a lowered percentage is a rollback)
    and alerts fired, oldest first."""
    changes: dict[float, list[Mapping[str, Any]]] = {}
    for row in audit:
        if isinstance(row.get("at"), (int, float)):
            changes.setdefault(float(row["at"]), []).append(row)
    out = []
    for at, rows in changes.items():
        lowered, words = False, []
        for row in rows:
            old, new = row.get("old_value"), row.get("new_value")
            if row.get("flag") == "v2_rollout_percentage" and isinstance(new, (int, float)):
                lowered = lowered or (isinstance(old, (int, float)) and new < old)
                words.append(f"percentage {'–' if old is None else f'{old:g}'} → {new:g} %")
            else:
                words.append(f"{row.get('flag')} {old} → {new}")
        text = f"{'rollback: ' if lowered else ''}{', '.join(words)} by {rows[0].get('actor')}"
        out.append(Marker(at, "rollback" if lowered else "change", text))
    for event in alert_events:
        if event.get("event") == "fired" and isinstance(event.get("at"), (int, float)):
            text = f"alert {event.get('rule')} ({event.get('severity')}) fired"
            out.append(Marker(float(event["at"]), "alert", text))
    return sorted(out, key=lambda m: m.at)


@dataclass(frozen=True)
class GuardrailChart:
    """One interval metric of the gate over the stage: estimate, anytime-valid band, thresholds."""

    key: str
    title: str
    latest: str
    interval: str
    svg: Markup


def guardrail_charts(history: Mapping[str, Any], criteria: Sequence[Mapping[str, Any]]) -> list[GuardrailChart]:
    """A difference-over-time chart per interval metric the current gate reads and has data for."""
    out = []
    x_range = (float(history["entered_at"]), max(float(history["now"]), float(history["entered_at"]) + 60.0))
    for metric, points in history["metrics"].items():
        kind = wording.style(metric)
        ratio = kind == "ratio_v1"

        def fmt(v: float | None, ratio: bool = ratio) -> str:
            if v is None:
                return "–"
            if ratio:
                return f"{v / 100:.2f}×"
            return "0" if abs(v) < 5e-3 else f"{v:+.2f}"

        rows = [(p["at"], p["point"], p["lower"], p["upper"]) for p in points]
        latest = next((p for p in reversed(points) if p["point"] is not None), None)
        if latest is None:
            continue
        title = f"{wording.label(metric)} ({'× v1' if ratio else 'points' if kind == 'points' else metric})"
        svg = band_chart(f"guardrail-{metric}", title, rows, x_range,
                         thresholds=wording.thresholds_on(metric, criteria), reference=100.0 if ratio else 0.0,
                         floor=0.0 if ratio else None, fmt=fmt)
        out.append(GuardrailChart(
            metric, title, wording.amount(latest["point"], kind),
            wording.interval_text(latest["lower"], latest["upper"], kind), svg))
    return out
