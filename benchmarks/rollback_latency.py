"""Time from a CRITICAL evaluation to its rollback, with a healthy, a hung and a trickling webhook, in one run.

Run: .venv/bin/python benchmarks/rollback_latency.py [--trials N]

Each trial builds a fresh app (own SQLite file) at 50 % whose v2 fails on 20 % of
calls, counts 400 calls, then times ``rollout.evaluate()`` — the CRITICAL rule
fires, the rollback is written, the alert is queued — until the rollback's
``flag_changed`` signal. The webhook is a local server that answers at once,
never answers, or sends one byte a second. Trials of the three kinds are
interleaved so they share the machine's noise; medians and ratios to the healthy
webhook are printed.
"""
from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from flask import Flask

from flask_v2rollout import V2Rollout
from flask_v2rollout.signals import flag_changed

STOP = threading.Event()


class Healthy(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class Hung(Healthy):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        STOP.wait(120)


class Trickle(Healthy):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.wfile.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(120):
            if STOP.wait(1.0):
                return
            try:
                self.wfile.write(b"X")
                self.wfile.flush()
            except OSError:
                return


def serve(handler: type[BaseHTTPRequestHandler]) -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/hook"


def failing_v2(x: int) -> int:
    if x % 5 == 0:
        raise RuntimeError("v2 broke")
    return x


def trial(root: Path, url: str, index: int) -> float:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=failing_v2, defaults={"v2_rollout_percentage": 50})
    app = Flask(f"bench{index}", instance_path=str(root / f"i{index}"))
    app.config.update(V2ROLLOUT_WEBHOOK_URL=url, V2ROLLOUT_NOTIFY_TIMEOUT_S=30, V2ROLLOUT_METRICS_FLUSH_S=3600,
                      V2ROLLOUT_EVALUATE_EVERY_S=10**9)
    ext.init_app(app)
    landed: list[float] = []

    def on_change(sender: Flask, **kw: Any) -> None:
        if kw["actor"] == "auto-rollback":
            landed.append(time.perf_counter())

    with app.app_context():
        for i in range(400):
            ext.calculate("calc", i, user_id=f"u{i}")
        ext.flush()
        flag_changed.connect(on_change, app)
        start = time.perf_counter()
        ext.evaluate()
        flag_changed.disconnect(on_change, app)
    assert landed, "no rollback"
    return (landed[0] - start) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=15)
    args = parser.parse_args()
    socket.setdefaulttimeout(5)
    urls = {"healthy": serve(Healthy), "never answers": serve(Hung), "trickles 1 B/s": serve(Trickle)}
    times: dict[str, list[float]] = {kind: [] for kind in urls}
    with tempfile.TemporaryDirectory() as tmp:
        index = 0
        for _ in range(args.trials):
            for kind, url in urls.items():
                times[kind].append(trial(Path(tmp), url, index))
                index += 1
    STOP.set()
    base = statistics.median(times["healthy"])
    print(f"CRITICAL evaluation → rollback landed, median of {args.trials} trials each (ms):")
    for kind, values in times.items():
        median = statistics.median(values)
        print(f"  {kind:15s} {median:8.2f} ms   ratio to healthy {median / base:5.3f}")


if __name__ == "__main__":
    main()
