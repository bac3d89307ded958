"""The example app as gunicorn serves it in production tests, plus two probes for the test.

``X-Worker-Pid`` on every response and ``GET /_worker`` (this worker's *cached*
flags) let a test see what each worker serves; nothing else is changed.
"""
from __future__ import annotations

import os

from flask import Response, jsonify

from example_app import create_app
from example_app.rollout import ROLLOUT, rollout

app = create_app(instance_path=os.environ["INSTANCE_DIR"])
with app.app_context():
    # As a --preload deployment should (docs/configuration.md): read the flags before gunicorn forks, so every
    # worker starts with them instead of serving the safe defaults until its own first read.
    rollout.flags(ROLLOUT)


@app.after_request
def _worker_header(response: Response) -> Response:
    response.headers["X-Worker-Pid"] = str(os.getpid())
    return response


@app.get("/_worker")
def worker():
    return jsonify(pid=os.getpid(), flags=rollout.flags(ROLLOUT))
