"""Request latency with shadow mode on vs off, v2 = a 20 ms sleep, in one run.

Run: .venv/bin/python benchmarks/shadow_latency.py [--requests N]

Users are at 0 %, so with shadow on every request submits v2 to the shadow
runner; the request must not wait for it. Two measurements, each with shadow
off and on, requests interleaved so both modes share the machine's noise:

* gunicorn: the app under gunicorn (1 worker, gthread) on 127.0.0.1, requests
  over a keep-alive HTTP connection — how a deployed app sees it;
* in-process: the Werkzeug test client calling the WSGI app in this process, a
  CPU-bound worst case in which every shadow thread wake-up competes with the
  request for the GIL.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shadow_app import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


def interleave(get_off: Callable[[int], None], get_on: Callable[[int], None],
               n: int) -> tuple[list[float], list[float]]:
    off, on = [], []
    for i in range(n):
        for fn, out in ((get_off, off), (get_on, on)) if i % 2 else ((get_on, on), (get_off, off)):
            start = time.perf_counter()
            fn(i)
            out.append((time.perf_counter() - start) * 1000)
    return off, on


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gunicorn(shadow: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "SHADOW": "on" if shadow else "off", "BENCH_INSTANCE": tempfile.mkdtemp(),
           "PYTHONPATH": f"{ROOT / 'benchmarks'}:{ROOT}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-w", "1", "-k", "gthread", "--threads", "2", "--keep-alive", "30",
         "-b", f"127.0.0.1:{port}", "shadow_app:app_from_env()"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        if proc.poll() is not None:
            raise RuntimeError("gunicorn exited")
    raise RuntimeError("gunicorn did not start")


def http_getter(port: int) -> tuple[Callable[[int], None], http.client.HTTPConnection]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(i: int) -> None:
        conn.request("GET", f"/edge/{i}")
        response = conn.getresponse()
        response.read()
        assert response.status == 200

    return get, conn


def stats_of(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=90)  # waits for the queue to drain
    conn.request("GET", "/shadow-stats")
    return json.loads(conn.getresponse().read())


def report(title: str, off: list[float], on: list[float], stats: dict) -> None:
    done = sum(stats.get("shadow", {}).values())
    dropped = sum(stats.get("shadow_drop", {}).values())
    print(f"\n{title}: {len(off)} requests per mode")
    print(f"  {'mode':11} {'p50 ms':>8} {'p95 ms':>8}")
    print(f"  {'shadow off':11} {pct(off, 50):8.3f} {pct(off, 95):8.3f}")
    print(f"  {'shadow on':11} {pct(on, 50):8.3f} {pct(on, 95):8.3f}")
    print(f"  shadow runs completed {done:.0f}, dropped (queue full) {dropped:.0f}")
    print(f"  p95 ratio on/off: {pct(on, 95) / pct(off, 95):.3f}   p50 ratio: {pct(on, 50) / pct(off, 50):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    print("v2 = 20 ms sleep; shadow workers 2, queue 1000; goal: p95 ratio on/off ≤ 1.05")

    servers = [start_gunicorn(False), start_gunicorn(True)]
    try:
        (get_off, _), (get_on, _) = (http_getter(port) for _, port in servers)
        for i in range(100):  # warm up
            get_off(i)
            get_on(i)
        off, on = interleave(get_off, get_on, args.requests)
        report("gunicorn (1 worker, gthread) over loopback HTTP", off, on, stats_of(servers[1][1]))
    finally:
        for proc, _ in servers:
            proc.terminate()
            proc.wait(30)

    (app_off, _), (app_on, _) = create_app(False), create_app(True)
    c_off, c_on = app_off.test_client(), app_on.test_client()
    for i in range(100):
        c_off.get(f"/edge/{i}")
        c_on.get(f"/edge/{i}")
    off, on = interleave(lambda i: c_off.get(f"/edge/{i}"), lambda i: c_on.get(f"/edge/{i}"), args.requests)
    report("in-process WSGI (test client)", off, on, c_on.get("/shadow-stats").get_json())


if __name__ == "__main__":
    main()
