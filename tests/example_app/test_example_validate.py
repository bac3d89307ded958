"""Phase-2 validation verdicts against the runbook's Shadow → Canary gate."""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from example_app.validate import ValidationReport, decide, percentile


def report(agreement: float = 75.0, fallback: float = 10.0, p95_ms: float = 0.5, errors: int = 0) -> ValidationReport:
    """A report of 1 000 QB-weeks with the given rates."""
    fallbacks = round(10 * fallback)
    compared = 1000 - fallbacks - errors
    agreeing = round(compared * agreement / 100)
    return ValidationReport(
        season=2024, qb_weeks=1000, exact=agreeing, close=0, moderate=compared - agreeing,
        fallbacks=fallbacks, errors=errors, fallback_reasons=Counter(insufficient_weeks=fallbacks),
        v1_ms=[1.0] * 1000, v2_ms=[p95_ms] * 1000,
    )


@pytest.mark.parametrize(
    ("kwargs", "verdict", "reason"),
    [
        ({}, "GO", "every blocker clear"),
        ({"agreement": 60.0}, "GO", "every blocker clear"),
        ({"agreement": 85.0}, "GO", "every blocker clear"),
        ({"agreement": 90.0}, "CONDITIONAL", "outside the 60-85 % target"),  # the runbook's own result
        ({"agreement": 55.0}, "CONDITIONAL", "inside the 50-90 % blocker band"),
        ({"agreement": 95.0}, "NO-GO", "blocker: agreement 95.0 % outside 50-90 %"),
        ({"agreement": 45.0}, "NO-GO", "blocker: agreement"),
        ({"fallback": 25.0}, "NO-GO", "must-pass missed: fallback 25.0 %"),
        ({"fallback": 35.0}, "NO-GO", "blocker: fallback 35.0 % > 30 %"),
        ({"p95_ms": 700.0}, "NO-GO", "must-pass missed: v2 p95"),
        ({"p95_ms": 1500.0}, "NO-GO", "blocker: v2 p95"),
        ({"errors": 1}, "NO-GO", "blocker: 1 unhandled v2 exception"),
        ({"agreement": 90.0, "fallback": 25.0}, "NO-GO", "must-pass missed: fallback"),
    ],
)
def test_verdicts(kwargs: dict[str, Any], verdict: str, reason: str) -> None:
    got, reasons = decide(report(**kwargs))
    assert got == verdict
    assert any(reason in r for r in reasons), reasons


def test_no_data_is_never_go() -> None:
    assert decide(ValidationReport(season=2031))[0] == "NO-GO"


def test_percentile() -> None:
    assert percentile([], 95) == 0.0
    assert percentile([3.0], 95) == 3.0
    assert percentile([float(n) for n in range(1, 101)], 95) == pytest.approx(95.05)


def test_cli_prints_the_figures_and_the_decision(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["validate", "--season", "2024"])
    assert result.exit_code == 0, result.output
    assert re.search(r"season 2024: \d+ QB-weeks", result.output)
    assert "agreement" in result.output and "fallback" in result.output and "p95" in result.output
    assert "Decision: CONDITIONAL" in result.output


def test_cli_exits_1_on_no_go(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["validate", "--season", "2031"])
    assert result.exit_code == 1
    assert "Decision: NO-GO" in result.output


def test_cli_without_a_database_says_how_to_build_it(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    app = make_app(NFL_DATABASE=str(tmp_path / "none.db"))
    result = app.test_cli_runner().invoke(args=["validate"])
    assert result.exit_code == 1
    assert "run `flask --app example_app init-db` first" in result.output
