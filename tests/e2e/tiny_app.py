"""The smallest app gunicorn can serve: it proves the runner, not the extension."""
from __future__ import annotations

import atexit
import os

from flask import Flask

app = Flask(__name__)
# Registered before the fork (--preload), so it runs in every worker that exits gracefully.
atexit.register(lambda: print(f"atexit {os.getpid()}", flush=True))


@app.get("/healthz")
def healthz() -> dict[str, bool]:
    return {"ok": True}


@app.get("/pid")
def pid() -> dict[str, int]:
    return {"pid": os.getpid()}
