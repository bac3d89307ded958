"""``python -m example_app.demo`` (``make demo``): the app, its data and live traffic in one go.

Builds the database on first run, serves on 127.0.0.1 (``PORT``, default 5000)
with the rollout in shadow mode plus a 10 % canary, so the admin UI shows both
shadow comparisons and v2 traffic, and drives it with the traffic simulator
until Ctrl-C (or SIGTERM).
"""
from __future__ import annotations

import importlib
import os
import secrets
import signal
import threading

from werkzeug.serving import WSGIRequestHandler, make_server

from . import create_app, datagen
from .db import connect, database_path
from .players import players_in_season
from .simulate import SimulationReport, simulate

HOST = "127.0.0.1"
USERS = 5000
RPS = 50.0


class _QuietHandler(WSGIRequestHandler):
    """No access log: 50 lines a second would bury the banner."""

    def log_request(self, *args: object, **kwargs: object) -> None:
        pass


def _configure_telemetry() -> None:
    """Export to OTLP when an endpoint is configured and the extension can do it; else nothing."""
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return
    try:
        telemetry = importlib.import_module("flask_v2rollout.telemetry")
    except ImportError:
        return
    configure = getattr(telemetry, "configure_otlp", None)
    if configure is not None:
        configure()


def _stop_on_sigterm(_signum: int, _frame: object) -> None:
    """Treat a service manager's SIGTERM like Ctrl-C: stop traffic, close the server."""
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    port = int(os.environ.get("PORT", "5000"))
    token = os.environ.get("V2ROLLOUT_ADMIN_TOKEN") or secrets.token_urlsafe(24)
    app = create_app({
        "SECRET_KEY": os.environ.get("FLASK_SECRET_KEY") or secrets.token_hex(32),
        "V2ROLLOUT_ADMIN_TOKEN": token,
        "V2ROLLOUT_DEFAULTS": {"v2_rollout_percentage": 10, "v2_shadow_mode_enabled": True},
    })
    path = database_path(app)
    if not os.path.exists(path):
        print(f"Building {path} …", flush=True)
        datagen.build_database(path)
    conn = connect(path, read_only=True)
    try:
        players = players_in_season(conn, int(app.config["NFL_SEASON"]))
    finally:
        conn.close()
    _configure_telemetry()

    server = make_server(HOST, port, app, threaded=True, request_handler=_QuietHandler)
    base = f"http://{HOST}:{port}"
    stop = threading.Event()
    report = SimulationReport()

    def traffic() -> None:
        nonlocal report
        report = simulate(base, players, users=USERS, rps=RPS, stop=stop)

    traffic_thread = threading.Thread(target=traffic, name="demo-traffic", daemon=True)
    print(
        f"\nFlask-V2Rollout demo on {base}/\n"
        f"  admin UI     {base}/v2rollout/\n"
        f"  admin token  {token}\n"
        f"  try          curl -s -X POST {base}/api/edges -H 'Content-Type: application/json'"
        f" -H 'X-User-Id: user-7' -d '{{\"player\": \"Patrick Mahomes\", \"opponent\": \"LAC\"}}'\n"
        f"  traffic      {USERS} users, {RPS:g} requests/s (shadow on, 10 % canary)\n"
        "Ctrl-C stops.\n",
        flush=True,
    )
    traffic_thread.start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        traffic_thread.join(timeout=10)
        server.server_close()
        print(f"\nTraffic: {report.summary()}")


if __name__ == "__main__":
    main()
