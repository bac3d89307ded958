"""Helpers shared by test modules (importable by name, unlike conftest.py)."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, jsonify
from sqlalchemy import event

from flask_v2rollout import V2Rollout


def build_app(instance: Path, ext: V2Rollout | None = None, **config: Any) -> tuple[Flask, V2Rollout]:
    """A small host app with one route that calls ``calculate()``.

    Its metrics flush (and alerts, rollback and autopilot are evaluated) when the test says so: the background
    flusher's interval is an hour unless a test sets ``V2ROLLOUT_METRICS_FLUSH_S``. With the default 5 s, a test
    outlasting it on a slow machine gets a flush of its own mid-test (and, a period later, an evaluation): an
    extra failure counted, an alert transition or the evaluation lease taken in the middle of the traffic.
    """
    app = Flask("host", instance_path=str(instance))
    # A test asserts what the first request sees, so it lets the very first flag read finish
    # (production requests wait at most V2ROLLOUT_FLAG_READ_BUDGET_MS for it; tests/test_flag_refresh.py).
    app.config.update({"SECRET_KEY": "test-secret", "TESTING": True, "V2ROLLOUT_FLAG_READ_BUDGET_MS": 10_000,
                       "V2ROLLOUT_METRICS_FLUSH_S": 3600, **config})
    ext = ext or V2Rollout()
    ext.init_app(app)

    @app.get("/calc/<int:x>")
    def calc(x: int):
        outcome = ext.calculate("calc", x)
        return jsonify(value=outcome.value, version=outcome.version, assigned=outcome.assigned,
                       fallback_reason=outcome.fallback_reason)

    @app.get("/flags")
    def flags():
        return jsonify(ext.flags("calc"))

    return app, ext


def ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip locally when a component is missing; fail in CI, where it must be there."""
    if condition:
        return
    if ci():
        pytest.fail(f"required component missing in CI: {reason}")
    pytest.skip(reason)


def free_port_url() -> str:
    """A loopback URL nothing listens on (the port was free a moment ago)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


# Every wait in the tests is bounded: a hang becomes a clear failure, never a stuck run.
WAIT_S = 60.0


def recv(conn: Any, timeout: float = WAIT_S, what: str = "the child process's message") -> Any:
    """``conn.recv()`` that fails after ``timeout`` seconds instead of blocking forever."""
    if not conn.poll(timeout):
        raise AssertionError(f"no {what} within {timeout}s")
    return conn.recv()


def join(worker: Any, timeout: float = WAIT_S, what: str | None = None) -> None:
    """Join a thread or process; fail if it is still running after ``timeout`` (a process is killed then)."""
    worker.join(timeout)
    if worker.is_alive():
        if hasattr(worker, "kill"):
            worker.kill()
            worker.join(5)
        raise AssertionError(f"{what or worker!r} still running after {timeout}s")


@contextmanager
def before_flag_update(app: Flask, action: Callable[[], None]) -> Iterator[list[int]]:
    """Run ``action`` (on another thread) just before this thread's next UPDATE of the flags row executes."""
    engine = app.extensions["v2rollout"].engine()
    owner = threading.get_ident()
    fired: list[int] = []

    def hook(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if fired or threading.get_ident() != owner or not statement.lstrip().upper().startswith(
                "UPDATE V2ROLLOUT_FLAGS"):
            return
        fired.append(1)
        other = threading.Thread(target=action)
        other.start()
        other.join(WAIT_S)
        assert not other.is_alive(), "the concurrent write did not finish"

    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield fired
    finally:
        event.remove(engine, "before_cursor_execute", hook)
