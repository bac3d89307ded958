"""The dashboard's five charts, built from ``rollout.series()``.

A day of per-minute points is merged into coarser buckets before drawing; rates
are re-derived from the summed counts (never averaged), and p95 shows the worst
minute of a bucket, since a latency spike is what an operator must not miss.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup

from .svg import Line, line_chart

#: range key → (window passed to series(), minutes merged into one point)
RANGES: Mapping[str, tuple[str, int]] = {"1h": ("1h", 1), "24h": ("24h", 10)}
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

    @property
    def svg(self) -> Markup:
        return line_chart(f"chart-{self.key}", self.title, self.lines, self.x_range, unit=self.unit,
                          y_max=self.y_max, wide=self.wide)


def _pct(part: float, whole: float) -> float | None:
    return part / whole * 100.0 if whole else None


def _buckets(series: Sequence[Mapping[str, Any]], size: int) -> list[list[Mapping[str, Any]]]:
    return [list(series[i:i + size]) for i in range(0, len(series), size)]


def build_charts(series: Sequence[Mapping[str, Any]], bucket_minutes: int) -> list[Chart]:
    """Calculations/min by version, p95, error rate, fallback rate and shadow agreement."""
    if not series:
        return []
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
    return [
        Chart("calculations", "Calculations per minute", "", by_arm(per_min), x_range, wide=True),
        Chart("p95", p95_title, " ms", by_arm(worst_p95), x_range),
        Chart("errors", "Error rate", " %", by_arm(rate("errors")), x_range, 100.0),
        Chart("fallbacks", "v2 fallback rate", " %", (Line("v2", "v2", arm_points("v2", rate("fallbacks"))),),
              x_range, 100.0),
        Chart("agreement", "Shadow agreement rate", " %",
              (Line("agreement", "agreement",
                    [(t, agreement(b)) for t, b in zip(starts, buckets, strict=True)]),), x_range, 100.0),
    ]
