"""Per-call time of the example app's calculators on the generated data.

Builds the database in a temporary directory, then times v2 (and v1 for
comparison) over every QB-week of every generated season, several rounds, and
prints p50/p95/p99 in milliseconds. The runbook's target is p95 < 500 ms; this
example aims at p95 < 1 ms. Fallbacks are timed too: they are calls v2 served.

    .venv/bin/python benchmarks/example_v2.py [--rounds N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # example_app is not installed

from example_app.calculators import EdgeCalculator, QBTDCalculatorV2
from example_app.datagen import SEASON_WEEKS, build_database
from example_app.db import connect
from flask_v2rollout import Fallback

P95_GOAL_MS = 1.0


def time_calls(calculator: EdgeCalculator | QBTDCalculatorV2, requests: list[dict[str, str]],
               rounds: int) -> tuple[list[float], int]:
    """Milliseconds per call, and how many calls fell back (v2 only)."""
    timings, fallbacks = [], 0
    for _ in range(rounds):
        for request in requests:
            start = time.perf_counter()
            try:
                calculator.calculate_edge(request)
            except Fallback:
                fallbacks += 1
            timings.append((time.perf_counter() - start) * 1000.0)
    return timings, fallbacks // rounds


def line(name: str, timings: list[float]) -> str:
    cuts = statistics.quantiles(timings, n=100, method="inclusive")
    return (f"  {name:<3} p50 {cuts[49]:7.3f} ms   p95 {cuts[94]:7.3f} ms   p99 {cuts[98]:7.3f} ms"
            f"   ({len(timings)} calls)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="passes over every QB-week (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "nfl_betting.db")
        build_database(path)
        conn = connect(path, read_only=True)
        all_v1: list[float] = []
        all_v2: list[float] = []
        for season in SEASON_WEEKS:
            requests = [{"player": p, "opponent": o} for p, o in conn.execute(
                "SELECT player_name, opponent FROM player_game_log WHERE season = ?", (season,)
            )]
            v1_ms, _ = time_calls(EdgeCalculator(conn, season), requests, args.rounds)
            v2_ms, fallbacks = time_calls(QBTDCalculatorV2(conn, season), requests, args.rounds)
            all_v1 += v1_ms
            all_v2 += v2_ms
            print(f"season {season}: {len(requests)} QB-weeks, v2 fell back on {fallbacks}")
            print(line("v2", v2_ms))
            print(line("v1", v1_ms))
        conn.close()
    print("all seasons:")
    print(line("v2", all_v2))
    print(line("v1", all_v1))
    p95 = statistics.quantiles(all_v2, n=100, method="inclusive")[94]
    ratio = statistics.median(all_v1) / statistics.median(all_v2)
    print(f"v2 p95 {p95:.3f} ms vs goal {P95_GOAL_MS} ms: {'met' if p95 < P95_GOAL_MS else 'MISSED'};"
          f" v2 median is {ratio:.1f}x faster than v1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
