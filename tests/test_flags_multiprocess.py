"""Flags shared by processes through one SQLite file."""
from __future__ import annotations

import multiprocessing as mp
import sqlite3
import time
from pathlib import Path

import procs
from flask_v2rollout import V2Rollout
from helpers import build_app, join, recv

CTX = mp.get_context("spawn")


def _parent(tmp_path: Path, uri: str):
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10)
    return build_app(tmp_path / "parent", ext, V2ROLLOUT_DATABASE_URI=uri)


def test_change_in_one_process_is_served_by_another_within_ttl(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    app, ext = _parent(tmp_path, uri)
    with app.app_context():
        ext.flags("calc")  # creates the row
    ttl = 1.0
    here, there = CTX.Pipe()
    child = CTX.Process(target=procs.watch_percentage, args=(str(tmp_path / "child"), uri, ttl, 37.5, there))
    child.start()
    try:
        assert recv(here) == 0.0  # the child has cached the old value
        with app.app_context():
            ext.set_flag("calc", "v2_rollout_percentage", 37.5, actor="ops", reason="test")
        written = time.monotonic()
        here.send("written")
        status, seen = recv(here)
    finally:
        join(child)
    assert status == "seen"
    lag = seen - written
    print(f"flag change served by the other process after {lag:.3f} s (TTL {ttl} s)")
    assert lag <= ttl + 0.5, f"served after {lag:.3f}s"
    assert child.exitcode == 0


def test_failing_store_serves_last_known_flags_without_errors(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    uri = f"sqlite:///{db}"
    app, ext = _parent(tmp_path, uri)
    with app.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 100, actor="ops")
    here, there = CTX.Pipe()
    child = CTX.Process(target=procs.serve_through_failure, args=(str(tmp_path / "child"), uri, 0.2, there))
    child.start()
    try:
        before = recv(here)
        assert before == [(200, "v2")] * 20
        # Break the store for real: the table the flags live in disappears.
        con = sqlite3.connect(db)
        con.execute("ALTER TABLE v2rollout_flags RENAME TO v2rollout_flags_moved")
        con.commit()
        here.send("broken")
        during, health, flags = recv(here)
        assert during == [(200, "v2")] * 200  # last-known flags: still 100 %, no error
        assert flags["v2_rollout_percentage"] == 100.0
        assert health["flag_store"]["healthy"] is False
        assert health["flag_store"]["failures"] >= 1
        assert "v2rollout_flags" in health["flag_store"]["last_error"]
        con.execute("ALTER TABLE v2rollout_flags_moved RENAME TO v2rollout_flags")
        con.execute("UPDATE v2rollout_flags SET flags = json_set(flags, '$.v2_rollout_percentage', 0.0)")
        con.commit()
        con.close()
        here.send("repaired")
        after, flags = recv(here)
        assert after == [(200, "v1")] * 20
        assert flags["v2_rollout_percentage"] == 0.0
    finally:
        join(child)
    assert child.exitcode == 0


def test_store_down_from_the_start_serves_v1_without_errors(make_app) -> None:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10)
    app, _ = make_app(ext, V2ROLLOUT_DATABASE_URI="sqlite:////nonexistent-dir/v2rollout.db")
    client = app.test_client()
    assert [client.get(f"/calc/{i}").get_json()["version"] for i in range(10)] == ["v1"] * 10
    with app.app_context():
        assert ext.health()["flag_store"]["failures"] >= 1


def test_two_concurrent_writers_one_wins_one_conflicts(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    app, ext = _parent(tmp_path, uri)
    with app.app_context():
        version = ext.flag_version("calc")
        audit_before = len(ext.audit("calc", limit=1000))
    barrier = CTX.Barrier(2)
    pipes, children = [], []
    for value in (10, 50):
        here, there = CTX.Pipe()
        child = CTX.Process(
            target=procs.racing_writer,
            args=(str(tmp_path / f"w{value}"), uri, value, version, barrier, there),
        )
        child.start()
        pipes.append(here)
        children.append(child)
    results = [recv(p) for p in pipes]
    for child in children:
        join(child)
    kinds = sorted(r[0] for r in results)
    assert kinds == ["conflict", "won"], results
    winner = next(r[1] for r in results if r[0] == "won")
    loser_msg = next(r[1] for r in results if r[0] == "conflict")
    assert "changed concurrently" in loser_msg
    with app.app_context():
        audit = ext.audit("calc", limit=1000)
        assert len(audit) == audit_before + 1
        assert audit[0]["new_value"] == float(winner)
        assert audit[0]["actor"] == f"writer-{winner:g}"
        assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == float(winner)
