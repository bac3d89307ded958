"""Nothing is invisible: every kind of failure of a calculator is counted, and counting never breaks."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy.exc
from flask import Flask

from flask_v2rollout import V2Rollout
from flask_v2rollout.dispatch import Outcome
from flask_v2rollout.metrics.recorder import Recorder
from flask_v2rollout.metrics.store import MetricStore
from flask_v2rollout.models import metadata
from helpers import build_app

WAIT_S = 10.0


class LibraryAbort(BaseException):
    """A library's own BaseException subclass (like gevent's or trio's cancellations)."""


def until(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Wait for ``condition`` (re-checked on each pass), failing clearly after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        threading.Event().wait(0.005)


def calc_app(tmp_path: Path, v1: Callable[..., Any], v2: Callable[..., Any], pct: float = 100,
             **register: Any) -> tuple[Flask, V2Rollout]:
    ext = V2Rollout()
    ext.register("calc", v1=v1, v2=v2, defaults={"v2_rollout_percentage": pct}, **register)
    return build_app(tmp_path / "instance", ext, V2ROLLOUT_METRICS_FLUSH_S=3600)


@pytest.mark.parametrize("kind", [GeneratorExit, LibraryAbort, asyncio.CancelledError])
def test_v2_raising_a_base_exception_falls_back_and_is_counted(tmp_path: Path, kind: type[BaseException]) -> None:
    def v2(x: int) -> int:
        raise kind("v2 gave up")

    app, ext = calc_app(tmp_path, v1=lambda x: x, v2=v2)
    client = app.test_client()
    answers = [client.get(f"/calc/{i}") for i in range(20)]
    assert [r.status_code for r in answers] == [200] * 20
    assert {r.get_json()["version"] for r in answers} == {"v1"}
    with app.app_context():
        assert ext.flush()
        arm = ext.metrics("calc")["arms"]["v2"]
    assert arm["calculations"] == 20 and arm["errors"] == 20 and arm["fallbacks"] == 20
    assert arm["unhandled"] == 0


@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit])
def test_a_process_exit_from_v2_propagates_but_is_counted_first(tmp_path: Path, kind: type[BaseException]) -> None:
    def v2(x: int) -> int:
        raise kind()

    app, ext = calc_app(tmp_path, v1=lambda x: x, v2=v2)
    with app.app_context():
        with pytest.raises(kind):
            ext.calculate("calc", 1, user_id="u1")
        assert ext.flush()
        arm = ext.metrics("calc")["arms"]["v2"]
    assert arm["calculations"] == 1 and arm["unhandled"] == 1 and arm["fallbacks"] == 0


def test_errors_of_the_v1_arm_are_counted_like_v2s(tmp_path: Path) -> None:
    def v1(x: int) -> int:
        raise ValueError("v1 broke")

    app, ext = calc_app(tmp_path, v1=v1, v2=lambda x: x, pct=0)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    client = app.test_client()
    assert {client.get(f"/calc/{i}").status_code for i in range(10)} == {500}
    with app.app_context():
        assert ext.flush()
        window = ext.metrics("calc")
    v1_arm = window["arms"]["v1"]
    assert v1_arm["calculations"] == 10 and v1_arm["errors"] == 10 and v1_arm["error_rate_pct"] == 100.0
    assert v1_arm["responses"] == {"5xx": 10} and window["availability_pct"] == 0.0


def test_the_hosts_database_down_is_counted_alerts_critical_and_rolls_back(tmp_path: Path) -> None:
    def down(x: int) -> int:
        raise sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("could not connect to server"))

    ext = V2Rollout()
    ext.register("calc", v1=down, v2=down, defaults={"v2_rollout_percentage": 50})
    app, _ = build_app(tmp_path / "instance", ext, V2ROLLOUT_METRICS_FLUSH_S=3600, PROPAGATE_EXCEPTIONS=False)
    client = app.test_client()
    statuses = [client.get(f"/calc/{i}").status_code for i in range(300)]
    assert statuses == [500] * 300
    with app.app_context():
        assert ext.flush()
        window = ext.metrics("calc")
        assert window["arms"]["v1"]["calculations"] + window["arms"]["v2"]["calculations"] == 300
        v2_calls = window["arms"]["v2"]["calculations"]
        # each v2-assigned call failed twice (v2, then v1 in its place), each v1-assigned call once
        assert window["db_errors"] == 300 + v2_calls
        assert window["availability_pct"] == 0.0
        result = ext.evaluate()
        assert result is not None
        fired = {t["rule"] for t in result["calc"]["transitions"] if t["kind"] == "fired"}
        assert "v2_database_connection_failure" in fired
        assert result["calc"]["auto_rollback"] is True
        assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 0
        assert ext.audit("calc", limit=1)[0]["actor"] == "auto-rollback"


def test_a_hanging_v2_is_counted_while_it_hangs_and_once_when_it_returns(tmp_path: Path) -> None:
    release = threading.Event()

    def v2(x: int) -> int:
        release.wait(WAIT_S)
        return x * 10

    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=v2, defaults={"v2_rollout_percentage": 100})
    app, _ = build_app(tmp_path / "instance", ext, V2ROLLOUT_METRICS_FLUSH_S=3600, V2ROLLOUT_SLOW_CALL_MS=1)
    done: list[Outcome] = []

    def call() -> None:
        with app.app_context():
            done.append(ext.calculate("calc", 2, user_id="u1"))

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    with app.app_context():
        until(lambda: ext.health()["calls"]["running"] == 1, "the call to start")

        def hung_counted() -> bool:
            assert ext.flush()
            return ext.metrics("calc")["arms"]["v2"]["hung"] == 1

        until(hung_counted, "the sweep to count the hanging call")
        arm = ext.metrics("calc")["arms"]["v2"]
        assert arm["calculations"] == 1 and arm["slow"] == 1  # visible before it returned
        release.set()
        caller.join(WAIT_S)
        assert not caller.is_alive() and done[0].value == 20
        assert ext.flush()
        arm = ext.metrics("calc")["arms"]["v2"]
    assert arm["calculations"] == 1 and arm["slow"] == 1 and arm["hung"] == 1  # counted once


def test_a_v2_deadline_serves_v1_and_counts_the_late_result(tmp_path: Path) -> None:
    release = threading.Event()
    started = threading.Event()

    def v2(x: int) -> int:
        started.set()
        release.wait(WAIT_S)
        return x * 10

    app, ext = calc_app(tmp_path, v1=lambda x: x, v2=v2, v2_timeout_ms=50)
    response = app.test_client().get("/calc/3")
    assert response.get_json() == {"value": 3, "version": "v1", "assigned": "v2", "fallback_reason": "deadline"}
    assert started.is_set()
    release.set()
    with app.app_context():
        def late_counted() -> bool:
            return ext.stats("calc").get("v2", {}).get("late", {}).get("", 0) == 1

        until(late_counted, "the late v2 result to be counted")
        assert ext.flush()
        arm = ext.metrics("calc")["arms"]["v2"]
    assert arm["fallbacks_by_reason"] == {"deadline": 1} and arm["late"] == 1


def test_a_v2_within_its_deadline_is_served(tmp_path: Path) -> None:
    app, _ = calc_app(tmp_path, v1=lambda x: x, v2=lambda x: x * 10, v2_timeout_ms=5000)
    assert app.test_client().get("/calc/3").get_json()["version"] == "v2"


def test_shadow_workers_survive_base_exceptions(tmp_path: Path) -> None:
    def v2(x: int) -> int:
        if x % 2:
            raise GeneratorExit()
        raise LibraryAbort()

    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=v2, defaults={"v2_shadow_mode_enabled": True})
    app, _ = build_app(tmp_path / "instance", ext, V2ROLLOUT_SHADOW_WORKERS=1, V2ROLLOUT_METRICS_FLUSH_S=3600)
    client = app.test_client()
    for i in range(50):
        assert client.get(f"/calc/{i}").status_code == 200
    with app.app_context():
        assert ext.drain(WAIT_S)
        assert ext.health()["shadow"]["pending"] == 0
        assert ext.flush()
        shadow = ext.metrics("calc")["shadow"]["v2"]
    assert shadow["by_agreement"] == {"v2_error": 50} and shadow["timeouts"] == 0


@pytest.mark.parametrize("label", ["\x00", "bad\ud800label", "x" * 5000])
def test_a_poisoned_subject_among_10000_calls_loses_nothing(tmp_path: Path, label: str) -> None:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x, subject=lambda x: label if x == 5000 else f"s{x % 7}")
    app, _ = build_app(tmp_path / "instance", ext, V2ROLLOUT_METRICS_FLUSH_S=3600)
    with app.app_context():
        for i in range(10_000):
            ext.calculate("calc", i, user_id=f"u{i % 50}")
        assert ext.flush()
        window = ext.metrics("calc")
        assert window["arms"]["v1"]["calculations"] == 10_000
        assert ext.health()["metrics"]["quarantined"] == 0 and ext.health()["metrics"]["backlog"] == 0


def test_a_row_sql_refuses_is_isolated_and_the_rest_of_the_batch_lands(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    metadata.create_all(engine)
    recorder = Recorder()
    store = MetricStore(lambda: engine, recorder, ensure_tables=lambda: None)
    for i in range(9_999):
        recorder.calculation(Outcome("calc", i, "v1", "v1", None, 1.0, user_id=f"u{i % 10}"))
    recorder.sink_error("calc", "v1", "unstorable\ud800")  # a key no SQLite driver can encode
    assert store.flush()
    assert store.quarantined == 1 and store.backlog == 0
    assert "UnicodeEncodeError" in (store.last_quarantine or "")
    window = store.window("calc", 3600)
    assert window["arms"]["v1"]["calculations"] == 9_999
    assert store.flush()  # the quarantine itself is counted in the next batch
    assert store.window("calc", 3600)["quarantined"] == 1
