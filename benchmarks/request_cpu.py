"""CPU per request in process: the apps of benchmarks/cpu_app.py through their WSGI app, no sockets.

Run: .venv/bin/python benchmarks/request_cpu.py [--requests N] [--rounds R]

``plain``, ``installed``, ``assign`` and ``extension`` (see cpu_app.py) in one process, users drawn at random
from 10 000, a fresh environ per request, rounds interleaved; per request: CPU of the process (every thread)
and of this thread alone, and the time the garbage collector took (``gc.callbacks``); medians. Beside
benchmarks/worker_cpu.py it tells the request path's own cost from what gunicorn's socket work around it adds.
"""
from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from werkzeug.test import EnvironBuilder

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_app  # noqa: E402  (the benchmark's app, beside this script)

MODES = ("plain", "installed", "assign", "extension")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000, help="requests per app per round")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    gc_s = [0.0]
    started = [0.0]

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            gc_s[0] += time.perf_counter() - started[0]

    gc.callbacks.append(on_gc)
    apps = {mode: cpu_app.create_app(mode) for mode in MODES}
    rng = random.Random(16)

    def environs(n: int) -> list[dict[str, Any]]:
        return [EnvironBuilder(path=f"/calc/{rng.randrange(100)}",
                               query_string=f"user=u{rng.randrange(10_000)}").get_environ() for _ in range(n)]

    def drive(mode: str, batch: list[dict[str, Any]]) -> tuple[float, float, float]:
        app, gc_before = apps[mode], gc_s[0]
        process, thread = time.process_time(), time.thread_time()
        for template in batch:
            environ = dict(template)  # a fresh environ per request: what a request keeps in it dies with it
            body = app(environ, lambda *_: None)
            b"".join(body)
            body.close()  # type: ignore[attr-defined]
        n = len(batch) / 1e6
        return ((time.process_time() - process) / n, (time.thread_time() - thread) / n, (gc_s[0] - gc_before) / n)

    for mode in MODES:
        drive(mode, environs(500))  # warm-up: imports, tables, first flag read
    samples: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode in MODES}
    for i in range(args.rounds):
        for mode in MODES[i % len(MODES):] + MODES[:i % len(MODES)]:
            samples[mode].append(drive(mode, environs(args.requests)))
    print(f"in process, {args.rounds} interleaved rounds of {args.requests} requests, random users of 10000")
    print(f"  {'app':10} {'process µs/request':>19} {'this thread':>12} {'gc':>6}")
    for mode, rows in samples.items():
        process, thread, collector = (statistics.median(column) for column in zip(*rows, strict=True))
        print(f"  {mode:10} {process:19.1f} {thread:12.1f} {collector:6.2f}")


if __name__ == "__main__":
    main()
