"""A host app for multi-worker metric tests: store at $DATABASE_URI, 50 % rollout, fast flushes."""
from __future__ import annotations

import os

from flask import Flask, jsonify, request

from flask_v2rollout import Fallback, V2Rollout

app = Flask(__name__, instance_path=os.environ["INSTANCE_DIR"])
app.secret_key = "e2e"
app.config.update(
    V2ROLLOUT_DATABASE_URI=os.environ["DATABASE_URI"],
    V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": float(os.environ.get("PERCENTAGE", "50"))},
    V2ROLLOUT_METRICS_FLUSH_S=float(os.environ.get("FLUSH_S", "1")),
    V2ROLLOUT_FLAG_TTL_S=float(os.environ.get("FLAG_TTL_S", "1")),
    V2ROLLOUT_STORE_ERROR_LOG_INTERVAL_S=5.0,
)
rollout = V2Rollout(app)
FAIL_EVERY = int(os.environ.get("FAIL_EVERY", "0"))  # v2 raises on every n-th subject


def v2(x: int) -> float:
    if FAIL_EVERY and x % FAIL_EVERY == 0:
        raise Fallback("test failure")
    return x * 1.5


rollout.register("calc", v1=lambda x: float(x), v2=v2)


@rollout.user_loader
def user_id() -> str | None:
    # This test service sits behind a trusted gateway that sets the header.
    return request.headers.get("X-User-Id")


with app.app_context():
    rollout.flags("calc")  # creates the tables before the fork (--preload)


@app.get("/healthz")
def healthz():
    return {"ok": True}


@app.get("/calc/<int:x>")
def calc(x: int):
    outcome = rollout.calculate("calc", x)
    return jsonify(version=outcome.version, assigned=outcome.assigned, duration_ms=outcome.duration_ms,
                   pid=os.getpid(), fallback=outcome.fallback_reason)


@app.get("/health")
def health():
    return jsonify({**rollout.health(), "pid": os.getpid()})


@app.get("/flags")
def flags():
    return jsonify({**rollout.flags("calc"), "pid": os.getpid()})
