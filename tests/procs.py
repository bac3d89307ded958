"""Code run in child processes by multi-process tests (spawned, so importable by name)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flask_v2rollout import ConflictError, V2Rollout


def _app(instance: str, uri: str, ttl: float):
    from helpers import build_app

    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10)
    app, _ = build_app(Path(instance), ext, V2ROLLOUT_DATABASE_URI=uri, V2ROLLOUT_FLAG_TTL_S=ttl)
    return app, ext


def watch_percentage(instance: str, uri: str, ttl: float, target: float, conn: Any) -> None:
    """Serve /flags until the percentage reads ``target``; report when (monotonic clock)."""
    app, _ = _app(instance, uri, ttl)
    client = app.test_client()
    conn.send(client.get("/flags").get_json()["v2_rollout_percentage"])
    conn.recv()  # the parent has written
    deadline = time.monotonic() + 10 * ttl + 5
    while time.monotonic() < deadline:
        if client.get("/flags").get_json()["v2_rollout_percentage"] == target:
            conn.send(("seen", time.monotonic()))
            return
    conn.send(("timeout", time.monotonic()))


def serve_through_failure(instance: str, uri: str, ttl: float, conn: Any) -> None:
    """Serve requests before, during and after the parent breaks the store."""
    app, ext = _app(instance, uri, ttl)
    client = app.test_client()

    def burst(n: int) -> list[tuple[int, Any]]:
        out = []
        for i in range(n):
            r = client.get(f"/calc/{i}", headers={})
            out.append((r.status_code, r.get_json()["version"] if r.status_code == 200 else None))
        return out

    def serve_until(healthy: bool) -> None:
        # Keep serving until the store has noticed the change (a refresh after the TTL).
        deadline = time.monotonic() + 10 * ttl + 5
        while time.monotonic() < deadline:
            assert client.get("/flags").status_code == 200
            with app.app_context():
                if ext.health()["flag_store"]["healthy"] is healthy:
                    return
        raise AssertionError(f"store never became healthy={healthy}")

    conn.send(burst(20))
    conn.recv()  # store broken
    serve_until(False)
    during = burst(200)
    with app.app_context():
        health = ext.health()
        flags = ext.flags("calc")
    conn.send((during, health, flags))
    conn.recv()  # store repaired
    serve_until(True)
    with app.app_context():
        conn.send((burst(20), ext.flags("calc")))


def racing_writer(instance: str, uri: str, value: float, expected: int, barrier: Any, conn: Any) -> None:
    app, ext = _app(instance, uri, 1.0)
    with app.app_context():
        barrier.wait()
        try:
            ext.set_flag("calc", "v2_rollout_percentage", value, actor=f"writer-{value:g}",
                         reason="race", expected_version=expected)
            conn.send(("won", value))
        except ConflictError as exc:
            conn.send(("conflict", str(exc)))


def racing_evaluator(instance: str, uri: str, barrier: Any, conn: Any) -> None:
    """Evaluate alerts on a shared store at the same moment as other processes."""
    from flask import Flask

    from flask_v2rollout import V2Rollout

    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x)
    app = Flask("evaluator", instance_path=instance)
    app.config.update(V2ROLLOUT_DATABASE_URI=uri)
    ext.init_app(app)
    with app.app_context():
        barrier.wait()
        report = ext.evaluate()
    conn.send(None if report is None else {k: v["auto_rollback"] for k, v in report.items()})
