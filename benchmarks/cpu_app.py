"""The app benchmarks/worker_cpu.py serves: a plain view calling v1, or the same view through the extension.

``$MODE`` is ``plain`` (no extension at all), ``extension`` (``calculate()`` at a 50 % rollout),
``installed`` (the extension initialised, the view calling v1 directly: the cost of its hooks alone) or
``assign`` (the view asks for the request's assignment, then calls v1 directly: hooks and assignment). Both read
the user from the ``user`` query argument (the extension through its user loader), as a host identifies its
user whether or not it rolls anything out; ``$BENCH_INSTANCE`` is the instance folder.
"""
from __future__ import annotations

import os
import tempfile

from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from flask_v2rollout import V2Rollout


def v1(x: int) -> int:
    return x + 1


def v2(x: int) -> int:
    return x + 1


def current_user() -> str | None:
    return request.args.get("user")


def create_app(mode: str) -> Flask:
    app = Flask("bench", instance_path=os.environ.get("BENCH_INSTANCE") or tempfile.mkdtemp())
    app.secret_key = "bench"

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return "ok"

    if mode != "plain":
        app.config["V2ROLLOUT_DEFAULTS"] = {"v2_rollout_percentage": 50}
        app.config.from_prefixed_env("BENCH")  # e.g. BENCH_V2ROLLOUT_METRICS_FLUSH_S=3600: one cost alone
        ext = V2Rollout(app)
        ext.register("bench", v1=v1, v2=v2)
        ext.user_loader(current_user)
    if mode in ("plain", "installed"):
        @app.get("/calc/<int:x>")
        def plain(x: int) -> ResponseReturnValue:
            current_user()  # the host knows its user either way (Flask-Login loads it on every request)
            return jsonify(value=v1(x))

        return app

    if mode == "assign":
        @app.get("/calc/<int:x>")
        def assigned_only(x: int) -> ResponseReturnValue:
            ext.assignment("bench")
            return jsonify(value=v1(x))

        return app

    @app.get("/calc/<int:x>")
    def through_extension(x: int) -> ResponseReturnValue:
        return jsonify(value=ext.calculate("bench", x).value)

    return app


def app_from_env() -> Flask:
    return create_app(os.environ.get("MODE", "plain"))
