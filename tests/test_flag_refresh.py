"""The flag store never stalls a request: SQL that blocks is waited for off the request path.

The blocking is real: the host's SQLite database (rollback journal, as Flask-SQLAlchemy makes it)
is held by another connection's EXCLUSIVE transaction, so every read of it waits for the busy
timeout and then fails with "database is locked".
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_v2rollout import V2Rollout
from flask_v2rollout.flags import FlagStore

TTL_S = 0.1
BUSY_S = 0.5  # the host engine's SQLite busy timeout: how long one blocked read waits
WAIT_S = 10.0  # bound of every wait on a condition below


def host_app(db_file: Path, instance: Path, budget_ms: float) -> tuple[Flask, V2Rollout]:
    from flask_sqlalchemy import SQLAlchemy

    app = Flask("host", instance_path=str(instance))
    app.config.update(
        SECRET_KEY="test", SQLALCHEMY_DATABASE_URI=f"sqlite:///{db_file}",
        SQLALCHEMY_ENGINE_OPTIONS={"connect_args": {"timeout": BUSY_S}},
        V2ROLLOUT_FLAG_TTL_S=TTL_S, V2ROLLOUT_FLAG_READ_BUDGET_MS=budget_ms,
    )
    db = SQLAlchemy(app)
    ext = V2Rollout(app, db=db)
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10)
    return app, ext


def store_of(app: Flask) -> FlagStore:
    store: FlagStore = app.extensions["v2rollout"].store
    return store


def refresh_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "v2rollout-flag-refresh")


@pytest.fixture
def locker(tmp_path: Path) -> Iterator[Any]:
    """``lock()`` takes an EXCLUSIVE transaction on the host database and sets the percentage to 0 in it."""
    connections: list[sqlite3.Connection] = []

    class Locker:
        def lock(self) -> None:
            con = sqlite3.connect(tmp_path / "host.db", isolation_level=None, timeout=WAIT_S)
            connections.append(con)
            con.execute("BEGIN EXCLUSIVE")
            con.execute("UPDATE v2rollout_flags SET flags = json_set(flags, '$.v2_rollout_percentage', 0.0), "
                        "version = version + 1")

        def release(self) -> None:
            connections.pop().execute("COMMIT")

    yield Locker()
    for con in connections:
        con.rollback()
        con.close()


def wait_until(condition: Any, poke: Any, store: FlagStore) -> bool:
    """Poke the store (a read that starts a due refresh) and wait for that refresh, until ``condition``."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        poke()
        store.wait_idle(WAIT_S)
        if condition():
            return True
    return False


def test_blocked_sql_serves_last_known_flags_within_the_budget(tmp_path: Path, locker: Any) -> None:
    budget_ms = 200.0
    app, ext = host_app(tmp_path / "host.db", tmp_path / "instance", budget_ms)
    store = store_of(app)
    with app.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 100, actor="ops")
        assert ext.flags("calc")["v2_rollout_percentage"] == 100.0
        assert store.wait_idle(WAIT_S)
        failures, started = store.failures, store.refreshes

        locker.lock()
        slowest, most_threads, served = 0.0, 0, set()
        deadline = time.monotonic() + WAIT_S
        # Reads go on through at least two blocked refreshes (each waits BUSY_S, then fails).
        while store.failures < failures + 2 and time.monotonic() < deadline:
            begin = time.perf_counter()
            flags = ext.flags("calc")
            slowest = max(slowest, time.perf_counter() - begin)
            served.add(flags["v2_rollout_percentage"])
            most_threads = max(most_threads, refresh_threads())
            assert ext.calculate("calc", 3, user_id="u1").version == "v2"
        assert store.failures >= failures + 2, "the blocked refreshes were never counted as failures"
        print(f"slowest get() while SQL was blocked: {slowest * 1000:.2f} ms (budget {budget_ms:g} ms)")
        assert slowest * 1000 < budget_ms
        assert served == {100.0}  # last-known flags, never the blocked transaction's
        assert most_threads == 1  # one background refresh at a time
        assert store.refreshes - started <= store.failures - failures + 1
        health = ext.health()["flag_store"]
        assert health["healthy"] is False and "database is locked" in health["last_error"]

        locker.release()
        assert wait_until(lambda: store.healthy and ext.flags("calc")["v2_rollout_percentage"] == 0.0,
                          lambda: ext.flags("calc"), store), "the store never recovered"
        assert ext.calculate("calc", 3, user_id="u1").version == "v1"
        assert ext.health()["flag_store"]["healthy"] is True


def test_first_read_waits_at_most_the_budget_then_serves_safe_defaults(tmp_path: Path, locker: Any) -> None:
    setup, setup_ext = host_app(tmp_path / "host.db", tmp_path / "setup", 10_000)
    with setup.app_context():
        setup_ext.set_flags("calc", {"v2_rollout_percentage": 100, "v2_shadow_mode_enabled": True}, actor="ops")
    budget_ms = 100.0
    app, ext = host_app(tmp_path / "host.db", tmp_path / "instance", budget_ms)
    store = store_of(app)
    locker.lock()
    with app.app_context():
        begin = time.perf_counter()
        flags = ext.flags("calc")
        elapsed_ms = (time.perf_counter() - begin) * 1000
        print(f"first get() on a blocked store: {elapsed_ms:.1f} ms (budget {budget_ms:g} ms)")
        assert elapsed_ms < budget_ms + 500  # the budget plus starting one thread, on a busy machine
        assert flags["v2_rollout_percentage"] == 0.0 and flags["v2_shadow_mode_enabled"] is False
        assert ext.calculate("calc", 3, user_id="u1").version == "v1"
        assert store.wait_idle(WAIT_S)
        assert store.failures >= 1 and store.healthy is False
        locker.release()
        assert wait_until(lambda: ext.flags("calc")["v2_rollout_percentage"] == 0.0 and store.healthy,
                          lambda: ext.flags("calc"), store)
        assert ext.flags("calc")["v2_shadow_mode_enabled"] is True  # read from SQL, not the safe defaults


def test_a_write_of_this_process_is_served_at_once(make_app: Callable[..., tuple[Flask, V2Rollout]],
                                                   ext: V2Rollout) -> None:
    app, _ = make_app(ext, V2ROLLOUT_FLAG_TTL_S=3600)
    with app.app_context():
        assert ext.flags("calc")["v2_rollout_percentage"] == 0.0
        ext.set_flag("calc", "v2_rollout_percentage", 40, actor="ops")
        assert ext.flags("calc")["v2_rollout_percentage"] == 40.0  # no refresh due for an hour


def test_the_extensions_own_engines_give_up_instead_of_hanging(tmp_path: Path) -> None:
    from sqlalchemy import event
    from sqlalchemy.pool import QueuePool

    from flask_v2rollout.runtime import _own_engine
    from flask_v2rollout.settings import Settings

    settings = Settings.from_config({"V2ROLLOUT_DB_STATEMENT_TIMEOUT_MS": 1500, "V2ROLLOUT_SQLITE_BUSY_TIMEOUT_S": 3})
    sqlite = _own_engine(f"sqlite:///{tmp_path / 'own.db'}", settings)
    with sqlite.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 3000
    assert isinstance(sqlite.pool, QueuePool) and sqlite.pool.timeout() == 2.0

    pg = _own_engine("postgresql+psycopg://u@127.0.0.1:1/x?options=-c%20work_mem%3D4MB", settings)
    seen: dict[str, Any] = {}

    @event.listens_for(pg, "do_connect")
    def capture(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
        seen.update(cparams)
        raise ConnectionRefusedError("captured")

    with pytest.raises(Exception, match="captured"):
        pg.connect()
    assert seen["connect_timeout"] == 2
    assert seen["options"] == "-c work_mem=4MB -c statement_timeout=1500"
    assert isinstance(pg.pool, QueuePool) and pg.pool.timeout() == 2.0
