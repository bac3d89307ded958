"""A process's memory of the exposure rows it wrote never outlives a deletion of them (PostgreSQL).

A flush holds the shared locks of its rollouts' reset counts; a deletion (another process's percentage change)
takes the exclusive lock and bumps the count before deleting. Whichever comes first, the other waits, and the
flush after the change sends every user again.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text

from flask_v2rollout import V2Rollout
from flask_v2rollout.testing import Clock, use_clock
from helpers import WAIT_S, build_app, join

from .support import PostgresServer


def _rollout() -> V2Rollout:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x)
    return ext


def _await_a_lock_wait(uri: str) -> None:
    """Return once a backend of the database waits for a lock (one side of the race, on the other's lock)."""
    engine = create_engine(uri)
    deadline = time.monotonic() + WAIT_S
    try:
        with engine.connect() as conn:
            while not conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )).scalar():
                assert time.monotonic() < deadline, "neither the flush nor the deletion waited for the other"
                conn.rollback()  # a fresh snapshot of the activity view for the next look
    finally:
        engine.dispose()


def _hold_after(engine: Any, statement: str, release: threading.Event) -> threading.Event:
    """Pause the first statement of ``engine`` whose SQL contains ``statement`` until ``release``; returns an
    event set once it is paused (its transaction, and the locks it took, held meanwhile)."""
    paused = threading.Event()

    @event.listens_for(engine, "after_execute")
    def hold(_conn, clause, _multiparams, _params, _options, _result) -> None:
        if statement in str(clause) and not paused.is_set():
            paused.set()
            assert release.wait(WAIT_S)

    return paused


@pytest.mark.parametrize("first", ["flush", "deletion"])
def test_a_flush_and_another_process_s_percentage_change_wait_for_each_other(
        postgres_server: PostgresServer, tmp_path: Path, first: str) -> None:
    uri = postgres_server.create_database(f"exposure_memory_{first}")
    config: dict[str, Any] = {"V2ROLLOUT_DATABASE_URI": uri, "V2ROLLOUT_METRICS_FLUSH_S": 3600,
                              "V2ROLLOUT_DEFAULTS": {"v2_rollout_percentage": 10}}
    ext, other = _rollout(), _rollout()
    app, _ = build_app(tmp_path / "a", ext, **config)
    other_app, _ = build_app(tmp_path / "b", other, **config)  # another process of the host
    clock = Clock(start=1_900_000_020)
    sent: list[int] = []
    release = threading.Event()

    def calls(n: int) -> None:
        for i in range(n):
            ext.calculate("calc", 1, user_id=f"u{i}")

    def in_thread(target: Callable[[], None]) -> threading.Thread:
        worker = threading.Thread(target=target)
        worker.start()
        return worker

    def flush() -> None:
        with app.app_context():
            assert ext.flush()

    def change() -> None:
        with other_app.app_context():
            other.set_flag("calc", "v2_rollout_percentage", 5, actor="ops", reason="reduce")

    with app.app_context(), use_clock(app, clock), use_clock(other_app, clock):
        engine = app.extensions["v2rollout"].engine()

        @event.listens_for(engine, "after_execute")
        def count(_conn, clause, multiparams, params, _options, _result) -> None:
            if "INSERT INTO v2rollout_exposures" in str(clause):  # one statement over arrays of users
                sent.append(len((multiparams[0] if multiparams else params)["u"]))

        calls(20)
        assert ext.flush()
        clock.advance(minutes=5)
        calls(25)
        if first == "flush":  # held after taking its shared locks and reading the counts
            paused = _hold_after(engine, "FROM v2rollout_exposure_resets", release)
            workers = [in_thread(flush)]
            assert paused.wait(WAIT_S)
            workers.append(in_thread(change))
        else:  # the deletion held after its exclusive lock and its bump, before deleting
            paused = _hold_after(other_app.extensions["v2rollout"].engine(), "INSERT INTO v2rollout_exposure_resets",
                                 release)
            workers = [in_thread(change)]
            assert paused.wait(WAIT_S)
            workers.append(in_thread(flush))
        _await_a_lock_wait(uri)
        assert workers[1].is_alive()
        release.set()
        for worker in workers:
            join(worker)
        clock.advance(minutes=1)
        calls(25)
        assert ext.flush()
        since_change = ext.metrics("calc", "2m")["arms"]
    if first == "flush":  # it trusted its memory (5 new users), then the change's deletion voided it
        assert sent == [20, 5, 25]
    else:  # it saw the bumped count: every user sent again, then remembered (the last flush sends none)
        assert sent == [20, 25, 0]
    assert since_change["v1"]["users"] + since_change["v2"]["users"] == 25
