"""The runbook's Phase-2 offline validation: v1 against v2 over every QB-week of a season.

It calls the calculator classes directly (no rollout, no Flask), measures
agreement, fallback and v2 time, and judges them with the Shadow → Canary
gate's numbers.
"""
from __future__ import annotations

import sqlite3
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field

from flask_v2rollout import Fallback

from .calculators import EdgeCalculator, QBTDCalculatorV2

#: |v2 − v1| edge bounds of the runbook's agreement classes (percentage points).
EXACT_BELOW = 1.0
CLOSE_BELOW = 3.0
#: Shadow → Canary gate.
AGREEMENT_TARGET = (60.0, 85.0)
AGREEMENT_BLOCKER_BAND = (50.0, 90.0)
FALLBACK_TARGET_BELOW = 20.0
FALLBACK_BLOCKER_ABOVE = 30.0
P95_TARGET_BELOW_MS = 500.0
P95_BLOCKER_ABOVE_MS = 1000.0


@dataclass
class ValidationReport:
    season: int
    qb_weeks: int = 0
    exact: int = 0
    close: int = 0
    moderate: int = 0
    fallbacks: int = 0
    errors: int = 0
    fallback_reasons: Counter[str] = field(default_factory=Counter)
    v1_ms: list[float] = field(default_factory=list)
    v2_ms: list[float] = field(default_factory=list)

    @property
    def compared(self) -> int:
        return self.exact + self.close + self.moderate

    @property
    def agreement_pct(self) -> float:
        """EXACT + CLOSE among QB-weeks where v2 produced its own edge."""
        return 100.0 * (self.exact + self.close) / self.compared if self.compared else 0.0

    @property
    def fallback_pct(self) -> float:
        return 100.0 * self.fallbacks / self.qb_weeks if self.qb_weeks else 0.0

    @property
    def v2_p95_ms(self) -> float:
        return percentile(self.v2_ms, 95)


def percentile(values: list[float], q: int) -> float:
    """The q-th percentile (inclusive method); 0 for no values."""
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def run_validation(conn: sqlite3.Connection, season: int) -> ValidationReport:
    """Compute both versions for every (player, opponent) game of ``season``."""
    v1, v2 = EdgeCalculator(conn, season), QBTDCalculatorV2(conn, season)
    report = ValidationReport(season)
    games = conn.execute(
        "SELECT player_name, opponent FROM player_game_log WHERE season = ? ORDER BY week, player_name",
        (season,),
    ).fetchall()
    for player, opponent in games:
        request = {"player": player, "opponent": opponent}
        report.qb_weeks += 1
        start = time.perf_counter()
        v1_edge = v1.calculate_edge(request)["edge"]
        report.v1_ms.append((time.perf_counter() - start) * 1000.0)
        start = time.perf_counter()
        try:
            v2_edge = v2.calculate_edge(request)["edge"]
        except Fallback as fb:
            report.fallbacks += 1
            report.fallback_reasons[fb.reason.split(":", 1)[0]] += 1
            continue
        except Exception:  # an unhandled v2 error is exactly what this run must surface
            report.errors += 1
            continue
        finally:
            report.v2_ms.append((time.perf_counter() - start) * 1000.0)
        difference = abs(v2_edge - v1_edge)
        if difference < EXACT_BELOW:
            report.exact += 1
        elif difference < CLOSE_BELOW:
            report.close += 1
        else:
            report.moderate += 1
    return report


def decide(report: ValidationReport) -> tuple[str, list[str]]:
    """GO / CONDITIONAL / NO-GO with the reasons.

    GO needs every blocker clear and every must-pass target met. A miss of the
    agreement target alone, inside the blocker band, is CONDITIONAL: the
    runbook's own validation (90 %) went ahead on that basis.
    """
    agreement, fallback, p95 = report.agreement_pct, report.fallback_pct, report.v2_p95_ms
    blockers, misses = [], []
    if report.qb_weeks == 0:
        blockers.append(f"no QB-weeks in season {report.season}")
    if report.errors:
        blockers.append(f"{report.errors} unhandled v2 exception(s)")
    if p95 > P95_BLOCKER_ABOVE_MS:
        blockers.append(f"v2 p95 {p95:.2f} ms > {P95_BLOCKER_ABOVE_MS:.0f} ms")
    low, high = AGREEMENT_BLOCKER_BAND
    if not low <= agreement <= high:
        blockers.append(f"agreement {agreement:.1f} % outside {low:.0f}-{high:.0f} %")
    if fallback > FALLBACK_BLOCKER_ABOVE:
        blockers.append(f"fallback {fallback:.1f} % > {FALLBACK_BLOCKER_ABOVE:.0f} %")
    if blockers:
        return "NO-GO", ["blocker: " + b for b in blockers]
    if p95 >= P95_TARGET_BELOW_MS:
        misses.append(f"v2 p95 {p95:.2f} ms is not below {P95_TARGET_BELOW_MS:.0f} ms")
    if fallback >= FALLBACK_TARGET_BELOW:
        misses.append(f"fallback {fallback:.1f} % is not below {FALLBACK_TARGET_BELOW:.0f} %")
    if misses:
        return "NO-GO", ["must-pass missed: " + m for m in misses]
    low, high = AGREEMENT_TARGET
    if not low <= agreement <= high:
        return "CONDITIONAL", [
            f"agreement {agreement:.1f} % is outside the {low:.0f}-{high:.0f} % target but inside the"
            f" {AGREEMENT_BLOCKER_BAND[0]:.0f}-{AGREEMENT_BLOCKER_BAND[1]:.0f} % blocker band;"
            " every other criterion passes"
        ]
    return "GO", ["every blocker clear and every must-pass target met"]


def format_report(report: ValidationReport) -> str:
    """The human-readable summary ``flask validate`` prints."""
    verdict, reasons = decide(report)
    reasons_text = ", ".join(f"{k} {v}" for k, v in sorted(report.fallback_reasons.items())) or "none"
    v1_avg = statistics.fmean(report.v1_ms) if report.v1_ms else 0.0
    v2_avg = statistics.fmean(report.v2_ms) if report.v2_ms else 0.0
    (t_low, t_high), (b_low, b_high) = AGREEMENT_TARGET, AGREEMENT_BLOCKER_BAND
    lines = [
        f"Phase-2 validation, season {report.season}: {report.qb_weeks} QB-weeks"
        f" ({report.compared} compared, {report.fallbacks} fell back, {report.errors} errors)",
        f"  agreement  {report.agreement_pct:5.1f} %   EXACT {report.exact}, CLOSE {report.close},"
        f" MODERATE {report.moderate}   (target {t_low:.0f}-{t_high:.0f} %,"
        f" blocker outside {b_low:.0f}-{b_high:.0f} %)",
        f"  fallback   {report.fallback_pct:5.1f} %   {reasons_text}"
        f"   (target < {FALLBACK_TARGET_BELOW:.0f} %, blocker > {FALLBACK_BLOCKER_ABOVE:.0f} %)",
        f"  v2 time    avg {v2_avg:.3f} ms, p95 {report.v2_p95_ms:.3f} ms; v1 avg {v1_avg:.3f} ms"
        f"   (target p95 < {P95_TARGET_BELOW_MS:.0f} ms, blocker > {P95_BLOCKER_ABOVE_MS:.0f} ms)",
        f"Decision: {verdict}",
    ]
    lines += [f"  - {r}" for r in reasons]
    return "\n".join(lines)
