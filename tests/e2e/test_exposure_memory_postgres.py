"""A process's memory of the exposure rows it wrote never outlives a deletion of them (PostgreSQL)."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

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
    """Return once a backend of the database waits for a lock (the deletion, on the flush's share lock)."""
    engine = create_engine(uri)
    deadline = time.monotonic() + WAIT_S
    try:
        with engine.connect() as conn:
            while not conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )).scalar():
                assert time.monotonic() < deadline, "the deletion of exposure rows did not wait for the flush"
                conn.rollback()  # a fresh snapshot of the activity view for the next look
    finally:
        engine.dispose()


def test_a_percentage_change_elsewhere_waits_for_a_flush_that_trusts_its_memory(
        postgres_server: PostgresServer, tmp_path: Path) -> None:
    uri = postgres_server.create_database("exposure_memory")
    config: dict[str, Any] = {"V2ROLLOUT_DATABASE_URI": uri, "V2ROLLOUT_METRICS_FLUSH_S": 3600,
                              "V2ROLLOUT_DEFAULTS": {"v2_rollout_percentage": 10}}
    ext, other = _rollout(), _rollout()
    app, _ = build_app(tmp_path / "a", ext, **config)
    other_app, _ = build_app(tmp_path / "b", other, **config)  # another process of the host
    clock = Clock(start=1_900_000_020)
    sent: list[int] = []
    paused, release = threading.Event(), threading.Event()

    def calls(n: int) -> None:
        for i in range(n):
            ext.calculate("calc", 1, user_id=f"u{i}")

    with app.app_context(), use_clock(app, clock), use_clock(other_app, clock):
        engine = app.extensions["v2rollout"].engine()

        @event.listens_for(engine, "after_execute")
        def watch(_conn, clause, multiparams, _params, _options, _result) -> None:
            if "INSERT INTO v2rollout_exposures" in str(clause):  # one statement over arrays of users
                sent.append(len((multiparams[0] if multiparams else _params)["u"]))
            elif getattr(clause, "is_select", False) and "v2rollout_exposure_resets" in str(clause) \
                    and not paused.is_set():
                if len(sent) == 1:  # the second flush: hold it after its share-locked read
                    paused.set()
                    assert release.wait(WAIT_S)

        calls(20)
        assert ext.flush()
        clock.advance(minutes=5)
        calls(25)

        def second_flush() -> None:
            with app.app_context():
                assert ext.flush()

        flusher = threading.Thread(target=second_flush)
        flusher.start()
        assert paused.wait(WAIT_S)

        def change() -> None:
            with other_app.app_context():
                other.set_flag("calc", "v2_rollout_percentage", 5, actor="ops", reason="reduce")

        changer = threading.Thread(target=change)
        changer.start()
        _await_a_lock_wait(uri)
        assert changer.is_alive()
        release.set()
        join(flusher)
        join(changer)
        clock.advance(minutes=1)
        calls(25)
        assert ext.flush()
        since_change = ext.metrics("calc", "2m")["arms"]
    assert sent == [20, 5, 25]  # remembered, then every user again once their rows were deleted
    assert since_change["v1"]["users"] + since_change["v2"]["users"] == 25
