"""``python -m example_app.demo`` (``make demo``): the app, its data and live traffic in one go.

Builds the database on first run, serves on 127.0.0.1 (``PORT``, default 5000)
and drives it with the traffic simulator until Ctrl-C (or SIGTERM). A fresh
rollout walks the runbook's first steps the way an operator would, through
audited writes: shadow mode first, then (after ``DEMO_SHADOW_S`` seconds,
default 30) the 10 % canary — so the dashboard's audit log, "Recent changes" and
chart markers show the history, and the admin UI shows both shadow comparisons
and v2 traffic. A database that already has a history keeps it.
"""
from __future__ import annotations

import importlib
import os
import secrets
import signal
import threading

from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

from flask_v2rollout.errors import ConflictError

from . import create_app, datagen
from .db import connect, database_path
from .players import players_in_season
from .rollout import ROLLOUT, rollout
from .simulate import SimulationReport, simulate

HOST = "127.0.0.1"
USERS = 5000
RPS = 50.0
DEMO_ACTOR = "demo"


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


def start_shadow(app: Flask) -> bool:
    """Shadow mode on, audited — unless the rollout already has a recorded history (never rewritten)."""
    with app.app_context():
        if rollout.audit_count(ROLLOUT):
            return False
        rollout.set_flags(ROLLOUT, {"v2_shadow_mode_enabled": True}, actor=DEMO_ACTOR,
                          reason="demo: shadow first (v2 computed beside v1, off the request path)")
    return True


def advance_to_canary(app: Flask, *, shadow_s: float, stop: threading.Event) -> str:
    """After ``shadow_s`` of shadow, the 10 % canary (audited); what happened, in words.

    The write is compare-and-set on the flags read after the shadow period, so a
    change made meanwhile in the dashboard wins.
    """
    if stop.wait(shadow_s):
        return "stopped in shadow"
    with app.app_context():
        state = rollout.flag_state(ROLLOUT)
        try:
            rollout.set_flags(ROLLOUT, {"v2_rollout_percentage": 10, "v2_shadow_mode_enabled": True},
                              actor=DEMO_ACTOR, expected_version=state["version"],
                              reason=f"demo: advance to the 10 % canary after {shadow_s:g} s of shadow "
                                     "(the runbook's 24 h shortened for the demo)")
        except ConflictError:
            return "left the flags as changed meanwhile"
    return "advanced to the 10 % canary"


def main() -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    port = int(os.environ.get("PORT", "5000"))
    token = os.environ.get("V2ROLLOUT_ADMIN_TOKEN") or secrets.token_urlsafe(24)
    app = create_app({
        "SECRET_KEY": os.environ.get("FLASK_SECRET_KEY") or secrets.token_hex(32),
        "V2ROLLOUT_ADMIN_TOKEN": token,
        "V2ROLLOUT_DEFAULTS": {"v2_rollout_percentage": 0, "v2_shadow_mode_enabled": False},
    })
    shadow_s = float(os.environ.get("DEMO_SHADOW_S", "30"))
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

    def stages() -> None:
        print(f"Rollout: {advance_to_canary(app, shadow_s=shadow_s, stop=stop)}.", flush=True)

    # before any traffic: the first write also creates the rollout's tables
    walking = start_shadow(app)
    traffic_thread = threading.Thread(target=traffic, name="demo-traffic", daemon=True)
    stages_thread = threading.Thread(target=stages, name="demo-stages", daemon=True)
    plan = f" (shadow first, the 10 % canary after {shadow_s:g} s)" if walking else ""
    print(
        f"\nFlask-V2Rollout demo on {base}/\n"
        f"  admin UI     {base}/v2rollout/\n"
        f"  admin token  {token}\n"
        f"  try          curl -s -X POST {base}/api/edges -H 'Content-Type: application/json'"
        f" -H 'X-User-Id: user-7' -d '{{\"player\": \"Patrick Mahomes\", \"opponent\": \"LAC\"}}'\n"
        f"  traffic      {USERS} users, {RPS:g} requests/s{plan}\n"
        "Ctrl-C stops.\n",
        flush=True,
    )
    traffic_thread.start()
    if walking:
        stages_thread.start()
    else:
        print("Rollout: kept its recorded history.", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        traffic_thread.join(timeout=10)
        if walking:
            stages_thread.join(timeout=10)
        server.server_close()
        print(f"\nTraffic: {report.summary()}")


if __name__ == "__main__":
    main()
