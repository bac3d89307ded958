"""Counts from 4 gunicorn workers merge exactly in SQL (SQLite file and PostgreSQL)."""
from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from .support import drive, merged_metrics


def exact_p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def requests_for(n: int, offset: int = 0) -> list:
    return [("GET", f"/calc/{i}", None, {"X-User-Id": f"user-{i}"}) for i in range(offset, offset + n)]


def outage_noticed(url: str) -> bool:
    """Whether a worker answering now has counted a failed SQL read or write of its own (flag refresh, flush)."""
    for status, health in drive(url, [("GET", "/health", None, None)] * 8, concurrency=8):
        assert status == 200, health
        if health["flag_store"]["failures"] >= 1 or health["metrics"]["flush_failures"] >= 1:
            return True
    return False


def check_exact(results: list, metrics: dict) -> None:
    by_arm: dict[str, list[float]] = {"v1": [], "v2": []}
    for status, body in results:
        assert status == 200
        by_arm[body["assigned"]].append(body["duration_ms"])
    for arm, durations in by_arm.items():
        got = metrics["arms"][arm]
        assert got["calculations"] == len(durations), arm
        assert got["p95_ms"] == pytest.approx(exact_p95(durations), rel=0.02), arm


def store_failed(url: str) -> bool:
    """Whether the worker that answers has counted a flag store failure."""
    [(status, body)] = drive(url, [("GET", "/health", None, None)])
    return status == 200 and body["flag_store"]["failures"] >= 1


@pytest.fixture(params=["sqlite", "postgresql"])
def database_uri(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    server = request.getfixturevalue("postgres_server")
    return server.create_database(f"merge_{abs(hash(str(tmp_path))) % 10**8}")


def test_four_workers_merge_exactly(gunicorn_server, database_uri: str, tmp_path: Path) -> None:
    server = gunicorn_server("tests.e2e.metrics_app:app", workers=4, preload=True,
                             env={"DATABASE_URI": database_uri, "INSTANCE_DIR": str(tmp_path / "inst")})
    results = drive(server.url, requests_for(2_000), concurrency=8)
    assert len({body["pid"] for _, body in results}) == 4  # every worker served
    assert server.stop() == 0  # workers flush at exit
    check_exact(results, merged_metrics(database_uri, "calc", tmp_path / "reader"))


def test_postgres_down_mid_load_loses_and_doubles_nothing(gunicorn_server, postgres_server, tmp_path: Path) -> None:
    uri = postgres_server.create_database("outage")
    server = gunicorn_server("tests.e2e.metrics_app:app", workers=4, preload=True,
                             env={"DATABASE_URI": uri, "INSTANCE_DIR": str(tmp_path / "inst")})
    before = drive(server.url, requests_for(600), concurrency=8)
    postgres_server.stop()
    try:
        during = drive(server.url, requests_for(600, 600), concurrency=8)
        # Keep serving until a worker has noticed the outage (its flags' TTL or its flush interval ran out while
        # the database was down), however fast the 600 requests went; the failure it counted is flushed later.
        deadline, offset = time.monotonic() + 60, 10_000
        while not outage_noticed(server.url):
            assert time.monotonic() < deadline, "no worker noticed PostgreSQL was down within 60 s"
            during += drive(server.url, requests_for(40, offset), concurrency=8)
            offset += 40
    finally:
        postgres_server.start()
    after = drive(server.url, requests_for(600, 100_000), concurrency=8)
    assert all(status == 200 for status, _ in before + during + after)  # no request failed
    assert {body["version"] for _, body in during} == {"v1", "v2"}  # last-known flags kept serving
    assert server.stop() == 0
    metrics = merged_metrics(uri, "calc", tmp_path / "reader")
    check_exact(before + during + after, metrics)
    assert metrics["db_errors"] >= 1


def test_concurrent_flushes_and_compactions_count_exactly(database_uri: str) -> None:
    """Eight writers flush the same minute rows (and the same users) while compactions fold them: every
    count lands once, the users once each, and what is folded into hours reads the same as the minutes."""
    import threading

    from sqlalchemy import create_engine, func, select
    from sqlalchemy.exc import OperationalError

    from flask_v2rollout.dispatch import Outcome
    from flask_v2rollout.metrics.recorder import Recorder, minute_of
    from flask_v2rollout.metrics.store import MetricStore
    from flask_v2rollout.models import counters_table, metadata

    engine = create_engine(database_uri, pool_size=10)
    metadata.create_all(engine)
    now = time.time()
    minutes = [minute_of(now) - 60 * k for k in range(1, 90, 7)]  # over the last hour and a half
    clocks = [[now] for _ in range(9)]
    stores = [MetricStore(lambda: engine, Recorder(clock=lambda c=c: c[0]), ensure_tables=lambda: None)
              for c in clocks]
    failures: list[BaseException] = []
    go = threading.Barrier(9, timeout=30)

    def write(store: MetricStore, w: int) -> None:
        try:
            go.wait()
            for i in range(25):
                clocks[w][0] = minutes[i % len(minutes)] + 1
                store.recorder.calculation(Outcome(rollout="calc", value=1, version="v1", assigned="v1",
                                                   fallback_reason=None, duration_ms=1.0,
                                                   user_id=f"user-{(w + i) % 40}"))
                # a flush PostgreSQL aborts (a deadlock with a compaction folding the same closed minute) keeps
                # its batch and is retried, as the flusher does at its next interval
                assert any(store.flush() for _ in range(5)), store.last_error
        except BaseException as exc:  # the main thread reports it
            failures.append(exc)

    def compact(store: MetricStore) -> None:
        try:
            go.wait()
            for _ in range(25):
                try:
                    store.compact(now=now)
                except OperationalError:  # aborted (deadlock): the transaction folded nothing; the next one will
                    continue
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(s, w)) for w, s in enumerate(stores[:8])]
    threads.append(threading.Thread(target=compact, args=(stores[8],)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, failures
    reader = stores[8]
    before = reader.window("calc", 2 * 3600, now=now)["arms"]["v1"]
    reader.compact(now=now)
    after = reader.window("calc", 2 * 3600, now=now)["arms"]["v1"]
    with engine.connect() as conn:
        pending = conn.execute(select(func.count()).where(counters_table.c.shard > 0)).scalar_one()
    engine.dispose()
    distinct = len({(w + i) % 40 for w in range(8) for i in range(25)})
    assert (before["calculations"], before["users"]) == (after["calculations"], after["users"]) == (200, distinct)
    assert pending == 0


def test_a_batch_applied_twice_is_counted_once(database_uri: str) -> None:
    """A retry after a commit whose confirmation was lost meets its batch id (claimed inside the first
    statement on PostgreSQL) and changes nothing, users included."""
    from sqlalchemy import create_engine

    from flask_v2rollout.metrics.recorder import Batch, Recorder, minute_of
    from flask_v2rollout.metrics.store import MetricStore
    from flask_v2rollout.models import metadata

    engine = create_engine(database_uri)
    metadata.create_all(engine)
    store = MetricStore(lambda: engine, Recorder(), ensure_tables=lambda: None)
    minute = minute_of(time.time())
    for batch in (Batch({("calc", "v1", minute, "calculations", ""): 7.0}, {}),
                  Batch({}, {("calc", "v2", "u1"): (minute, minute, minute)})):
        store._apply("batch-1" if batch.counters else "batch-2", batch)
        store._apply("batch-1" if batch.counters else "batch-2", batch)
    arms = store.window("calc", 300)["arms"]
    engine.dispose()
    assert arms["v1"]["calculations"] == 7
    assert (arms["v2"]["users"], arms["v2"]["converted_users"]) == (1, 1)
