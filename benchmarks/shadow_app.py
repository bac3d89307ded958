"""The app benchmarks/shadow_latency.py serves: v1 trivial, v2 a 20 ms sleep; shadow per $SHADOW."""
from __future__ import annotations

import os
import tempfile
import time

from flask import Flask, jsonify

from flask_v2rollout import V2Rollout


def create_app(shadow: bool | None = None) -> tuple[Flask, V2Rollout]:
    if shadow is None:
        shadow = os.environ.get("SHADOW") == "on"
    app = Flask("bench", instance_path=os.environ.get("BENCH_INSTANCE") or tempfile.mkdtemp())
    app.secret_key = "bench"
    app.config["V2ROLLOUT_DEFAULTS"] = {"v2_shadow_mode_enabled": shadow}
    ext = V2Rollout(app)
    ext.register("edge", v1=lambda x: {"edge": x}, v2=lambda x: time.sleep(0.02) or {"edge": x}, extract="edge")

    @app.get("/edge/<int:x>")
    def edge(x: int):
        return jsonify(ext.calculate("edge", x).value)

    @app.get("/healthz")
    def healthz():
        return "ok"

    @app.get("/shadow-stats")
    def shadow_stats():
        ext.drain(60)
        return jsonify(ext.stats("edge").get("v2", {}))

    return app, ext


def app_from_env() -> Flask:
    return create_app()[0]
