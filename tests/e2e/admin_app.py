"""A host with the admin open by token, as gunicorn serves it in the brute-force test.

Every response names the worker that answered (``X-Worker-Pid``), so the test sees both.
"""
from __future__ import annotations

import os

from flask import Flask, Response

from flask_v2rollout import V2Rollout

app = Flask(__name__, instance_path=os.environ["INSTANCE_DIR"])
app.config.from_prefixed_env()
rollout = V2Rollout()
rollout.register("calc", v1=lambda x: x, v2=lambda x: x * 10)
rollout.init_app(app)


@app.after_request
def _worker_header(response: Response) -> Response:
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response


@app.get("/healthz")
def healthz() -> dict[str, bool]:
    return {"ok": True}
