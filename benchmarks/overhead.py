"""Per-call cost of calculate() against calling the function directly.

Run: .venv/bin/python benchmarks/overhead.py [--calls N]
Prints µs per call for each way and the cost added by the extension, measured in one run.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from typing import Callable

from flask import Flask

from flask_v2rollout import V2Rollout


def v1(x: int) -> int:
    return x + 1


def v2(x: int) -> int:
    return x + 2


def per_call_us(fn: Callable[[], object], calls: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` median µs per call (robust to a busy core)."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    app = Flask("bench", instance_path=tmp)
    app.secret_key = "bench"
    ext = V2Rollout(app)
    ext.register("bench", v1=v1, v2=v2)
    with app.app_context():
        ext.set_flag("bench", "v2_rollout_percentage", 10, actor="bench")
    rows = []
    with app.test_request_context("/"):
        app.preprocess_request()  # assignment, as in a real request
        direct = per_call_us(lambda: v1(1), args.calls)
        in_request = per_call_us(lambda: ext.calculate("bench", 1), args.calls)
        with_user = per_call_us(lambda: ext.calculate("bench", 1, user_id="user-42"), args.calls)
    rows.append(("direct call v1(1)", direct, 0.0))
    rows.append(("calculate() in a request (assigned)", in_request, in_request - direct))
    rows.append(("calculate(user_id=…) (flags + md5)", with_user, with_user - direct))
    print(f"{'path':40} {'µs/call':>9} {'added µs':>9} {'ratio':>7}")
    for name, us, added in rows:
        print(f"{name:40} {us:9.3f} {added:9.3f} {us / direct:7.1f}x")
    print(f"goal: ≤ 15 µs added per call; worst measured {max(r[2] for r in rows):.3f} µs")


if __name__ == "__main__":
    main()
