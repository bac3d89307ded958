"""A host app for gunicorn tests of shadow mode: created before the fork (--preload).

Each worker writes its shadow counts to $STATS_DIR/stats-<pid>.json when it exits,
after draining its shadow queue.
"""
from __future__ import annotations

import atexit
import json
import os

from flask import Flask, jsonify

from flask_v2rollout import V2Rollout

app = Flask(__name__, instance_path=os.environ["INSTANCE_DIR"])
app.secret_key = "e2e"
app.config["V2ROLLOUT_DEFAULTS"] = {"v2_shadow_mode_enabled": True}
app.config["V2ROLLOUT_SHADOW_QUEUE_SIZE"] = 10_000
rollout = V2Rollout(app)
rollout.register("calc", v1=lambda x: {"edge": float(x)}, v2=lambda x: {"edge": x + 0.5}, extract="edge")

with app.app_context():
    rollout.flags("calc")  # touch SQL before the fork, as a real app's startup would


@app.get("/healthz")
def healthz():
    return {"ok": True}


@app.get("/calc/<int:x>")
def calc(x: int):
    outcome = rollout.calculate("calc", x)
    return jsonify(version=outcome.version, pid=os.getpid())


_MASTER = os.getpid()  # with --preload this module is imported in the master, before the fork


def _dump() -> None:
    if os.getpid() == _MASTER:
        return
    with app.app_context():
        rollout.drain(30)
        stats = rollout.stats("calc")
    path = os.path.join(os.environ["STATS_DIR"], f"stats-{os.getpid()}.json")
    with open(path, "w") as fh:
        json.dump(stats, fh)


atexit.register(_dump)
