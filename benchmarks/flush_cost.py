"""CPU of one metrics flush (the flusher thread's work) for the traffic benchmarks/worker_cpu.py sends.

Run: .venv/bin/python benchmarks/flush_cost.py [--requests N] [--flushes F] [--users U]

The app of benchmarks/cpu_app.py (``calculate()`` at 50 %, SQLite) serves N requests of random users drawn from
U through its WSGI app between two flushes, as one gunicorn worker does in a flush interval; the clock the
extension reads moves 5 s per flush (the default interval). The thread CPU of each ``flush()`` is measured;
the first F flushes warm up (the process learns which users it has written), the next F are reported.
Run it with ``PYTHONPATH=<another source tree>`` to measure another version.
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

from werkzeug.test import EnvironBuilder

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_app  # noqa: E402  (the benchmark's app, beside this script)

from flask_v2rollout.testing import Clock, use_clock  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=10_000, help="requests between two flushes")
    parser.add_argument("--flushes", type=int, default=6, help="flushes to warm up, then as many measured")
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args()
    os.environ.setdefault("BENCH_V2ROLLOUT_METRICS_FLUSH_S", "3600")  # the flushes are this script's alone
    app = cpu_app.create_app("extension")
    store = app.extensions["v2rollout"].metric_store
    rng = random.Random(16)

    def serve(n: int) -> None:
        for _ in range(n):
            environ = EnvironBuilder(path=f"/calc/{rng.randrange(100)}",
                                     query_string=f"user=u{rng.randrange(args.users)}").get_environ()
            body = app(environ, lambda *_: None)
            b"".join(body)
            body.close()  # type: ignore[attr-defined]

    clock = Clock(start=time.time())
    measured: list[float] = []
    with use_clock(app, clock):
        for i in range(2 * args.flushes):
            serve(args.requests)
            start = time.thread_time()
            assert store.flush(), "the flush failed"
            if i >= args.flushes:
                measured.append(time.thread_time() - start)
            clock.advance(seconds=5)
    ms = statistics.median(measured) * 1000
    print(f"{args.requests} requests of random users of {args.users} between flushes; {args.flushes} flushes "
          f"measured after {args.flushes} of warm-up")
    print(f"  flush CPU ms (median) {ms:.2f}  min {min(measured) * 1000:.2f}  max {max(measured) * 1000:.2f}  "
          f"per request {ms * 1000 / args.requests:.2f} µs")


if __name__ == "__main__":
    main()
