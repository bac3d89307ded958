"""Code run in child processes by multi-process tests (spawned, so importable by name)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flask_v2rollout import ConflictError, V2Rollout
from helpers import WAIT_S, recv


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
    recv(conn, what="word that the parent has written")
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
    recv(conn, what="word that the store is broken")
    serve_until(False)
    during = burst(200)
    with app.app_context():
        health = ext.health()
        flags = ext.flags("calc")
    conn.send((during, health, flags))
    recv(conn, what="word that the store is repaired")
    serve_until(True)
    with app.app_context():
        conn.send((burst(20), ext.flags("calc")))


def racing_writer(instance: str, uri: str, value: float, expected: int, barrier: Any, conn: Any) -> None:
    app, ext = _app(instance, uri, 1.0)
    with app.app_context():
        barrier.wait(WAIT_S)
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
        barrier.wait(WAIT_S)
        report = ext.evaluate()
    conn.send(None if report is None else {k: v["auto_rollback"] for k, v in report.items()})


def hanging_v2(instance: str, conn: Any) -> None:
    """A v2 that never returns, shadowed on 50 000 calls with a queue of 1 000; report what it cost."""
    import threading
    import tracemalloc

    forever = threading.Event()
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: {"edge": float(x)}, v2=lambda x: forever.wait(10 * WAIT_S), extract="edge")
    from helpers import build_app

    app, _ = build_app(Path(instance), ext, V2ROLLOUT_DEFAULTS={"v2_shadow_mode_enabled": True},
                       V2ROLLOUT_SHADOW_TIMEOUT_MS=20, V2ROLLOUT_SHADOW_QUEUE_SIZE=1_000, V2ROLLOUT_SHADOW_WORKERS=2)
    with app.app_context():
        runner = app.extensions["v2rollout"].shadow
        slowest = 0.0

        def calls(n: int) -> None:
            nonlocal slowest
            for i in range(n):
                start = time.perf_counter()
                ext.calculate("calc", i, user_id=f"u{i % 100}")
                slowest = max(slowest, time.perf_counter() - start)

        calls(30_000)
        tracemalloc.start(4)
        base = tracemalloc.take_snapshot()
        calls(20_000)
        grown = sum(stat.size_diff for stat in tracemalloc.take_snapshot().compare_to(base, "filename"))
        tracemalloc.stop()
        stuck_limit = 2 + runner.max_stuck
        deadline = time.monotonic() + 10
        while ext.stats("calc")["v2"].get("shadow_timeout", {}).get("", 0) < stuck_limit:
            if time.monotonic() > deadline:
                break
            runner.drain(0.05)
        stats = ext.stats("calc")
    conn.send({
        "max_stuck": runner.max_stuck, "pending": runner.pending, "grown": grown, "max_call_ms": slowest * 1000,
        "timeouts": stats["v2"]["shadow_timeout"][""], "drops": stats["v2"]["shadow_drop"]["queue_full"],
        "calculations": stats["v1"]["calculations"][""],
    })
    forever.set()
