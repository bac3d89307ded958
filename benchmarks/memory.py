"""RSS growth over 1 000 000 recorded calculations.

Run: .venv/bin/python benchmarks/memory.py [--calls N] [--users U] [--flush-every K]
calculate() with trivial v1/v2 at 50 %, U distinct users, a flush to SQLite every
K calls (as the 5 s flusher would at K/5 calls per second). Prints RSS after a
warm-up and at the end.
"""
from __future__ import annotations

import argparse
import os
import tempfile

from flask import Flask

from flask_v2rollout import Fallback, V2Rollout


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--flush-every", type=int, default=50_000)
    args = parser.parse_args()
    app = Flask("memory", instance_path=tempfile.mkdtemp())
    app.config["V2ROLLOUT_DEFAULTS"] = {"v2_rollout_percentage": 50}
    ext = V2Rollout(app)

    def v2(x: int) -> int:
        if x % 10 == 0:
            raise Fallback("thin data")
        return x

    ext.register("calc", v1=lambda x: x, v2=v2, subject=lambda x: f"player-{x % 80}")
    users = [f"user-{i}" for i in range(args.users)]
    with app.app_context():
        def run(start: int, stop: int) -> None:
            for i in range(start, stop):
                ext.calculate("calc", i, user_id=users[i % args.users])
                if i % args.flush_every == args.flush_every - 1:
                    ext.flush()

        warm = min(args.flush_every * 2, args.calls)
        run(0, warm)
        before = rss_mb()
        run(warm, args.calls)
        ext.flush()
        after = rss_mb()
        total = ext.metrics("calc", "1h")
    counted = total["arms"]["v1"]["calculations"] + total["arms"]["v2"]["calculations"]
    print(f"calls {args.calls}, users {args.users}, flush every {args.flush_every} calls; counted in SQL {counted}")
    print(f"RSS after warm-up {before:.1f} MB, after {args.calls} calls {after:.1f} MB, "
          f"growth {after - before:.1f} MB (goal < 20 MB)")


if __name__ == "__main__":
    main()
