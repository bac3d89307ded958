"""Labels PostgreSQL cannot store (NUL) never cost a count; a refused row is isolated, the rest lands."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine

from flask_v2rollout import V2Rollout
from flask_v2rollout.dispatch import Outcome
from flask_v2rollout.metrics.recorder import Recorder
from flask_v2rollout.metrics.store import MetricStore
from flask_v2rollout.models import metadata
from helpers import build_app

from .support import PostgresServer


def test_a_nul_subject_among_10000_calls_loses_nothing(postgres_server: PostgresServer, tmp_path: Path) -> None:
    uri = postgres_server.create_database("nul_subject")
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x, subject=lambda x: "a\x00b" if x == 5000 else f"s{x % 7}")
    app, _ = build_app(tmp_path / "instance", ext, V2ROLLOUT_DATABASE_URI=uri, V2ROLLOUT_METRICS_FLUSH_S=3600)
    with app.app_context():
        for i in range(10_000):
            ext.calculate("calc", i, user_id=f"u{i % 50}")
        assert ext.flush()
        assert ext.metrics("calc")["arms"]["v1"]["calculations"] == 10_000
        assert ext.health()["metrics"]["quarantined"] == 0


def test_a_row_postgresql_refuses_is_quarantined_alone(postgres_server: PostgresServer) -> None:
    engine = create_engine(postgres_server.create_database("refused_row"))
    metadata.create_all(engine)
    recorder = Recorder()
    store = MetricStore(lambda: engine, recorder, ensure_tables=lambda: None)
    for i in range(9_999):
        recorder.calculation(Outcome("calc", i, "v1", "v1", None, 1.0, user_id=f"u{i % 10}"))
    recorder.sink_error("calc", "v1", "nul\x00sink")  # internal keys are not cleaned: PostgreSQL refuses NUL
    assert store.flush()
    assert store.quarantined == 1 and store.backlog == 0
    assert store.window("calc", 3600)["arms"]["v1"]["calculations"] == 9_999
