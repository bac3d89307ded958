"""Metrics: counted once per call, merged in SQL, read back over windows."""
from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path

import pytest

from flask_v2rollout import Fallback, V2Rollout
from flask_v2rollout.dispatch import Outcome
from flask_v2rollout.metrics.recorder import Batch, Recorder, bin_value, latency_bin, parse_window, percentile
from flask_v2rollout.metrics.store import MetricStore
from flask_v2rollout.models import metadata


def exact_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def test_log_bins_keep_percentiles_within_two_percent() -> None:
    values = [0.05 * 1.0007 ** i for i in range(20_000)]  # 0.05 ms … ~60 ms
    bins: dict[int, float] = {}
    for v in values:
        bins[latency_bin(v)] = bins.get(latency_bin(v), 0) + 1
    for q in (0.5, 0.95, 0.99):
        assert percentile(bins, q) == pytest.approx(exact_percentile(values, q), rel=0.02)
    assert abs(bin_value(latency_bin(123.4)) / 123.4 - 1) < 0.015


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("5m", 300), ("24h", 86400), ("7d", 604800)])
def test_parse_window(text: str, seconds: int) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["5", "m", "-5m", "5w", "1.5h", "32d", "0m", "5m; drop table"])
def test_parse_window_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_window(text)


def metrics_app(make_app, **config):
    ext = V2Rollout()

    def v2(req: dict) -> float:
        if req["i"] % 10 == 0:
            raise Fallback("insufficient_weeks")
        if req["i"] % 10 == 1:
            raise KeyError("opponent")
        return float(req["i"])

    ext.register("calc", v1=lambda req: float(req["i"]), v2=v2, subject=lambda req: req["player"])
    app, _ = make_app(ext, **config)
    return app, ext


def test_window_figures_after_a_known_sequence(make_app) -> None:
    app, ext = metrics_app(make_app, V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 50})

    @ext.probe("qbs_with_v2_data_pct")
    def coverage() -> float:
        return 83.5

    @ext.probe("broken_probe")
    def broken() -> float:
        raise OSError("no data")

    durations: dict[str, list[float]] = {"v1": [], "v2": []}
    reasons: list[str] = []
    players = ["Patrick Mahomes"] * 5 + ["Josh Allen"] * 3 + ["Jalen Hurts"] * 2
    with app.app_context():
        for i in range(2_000):
            o = ext.calculate("calc", {"i": i, "player": players[i % 10]}, user_id=f"user-{i % 400}")
            durations[o.assigned].append(o.duration_ms)
            if o.fallback_reason:
                reasons.append(o.fallback_reason)
        assert ext.flush()
        m = ext.metrics("calc", "5m")
    v1, v2 = m["arms"]["v1"], m["arms"]["v2"]
    assert v1["calculations"] == len(durations["v1"]) and v2["calculations"] == len(durations["v2"])
    assert v1["calculations"] + v2["calculations"] == 2_000
    assert v2["fallbacks"] == len(reasons) > 0
    assert v2["fallbacks_by_reason"] == {"insufficient_weeks": reasons.count("insufficient_weeks"),
                                         "exception:KeyError": reasons.count("exception:KeyError")}
    assert v2["errors"] == reasons.count("exception:KeyError")
    assert v2["error_rate_pct"] == pytest.approx(v2["errors"] / v2["calculations"] * 100)
    assert v2["fallback_rate_pct"] == pytest.approx(len(reasons) / v2["calculations"] * 100)
    assert v1["errors"] == 0 and v1["unhandled"] == 0
    for arm in ("v1", "v2"):
        assert m["arms"][arm]["p95_ms"] == pytest.approx(exact_percentile(durations[arm], 0.95), rel=0.02)
        assert m["arms"][arm]["per_min"] == pytest.approx(m["arms"][arm]["calculations"] / 5)
    assert v1["users"] + v2["users"] == 400
    assert m["top_subjects"] == [["Patrick Mahomes", 1000.0], ["Josh Allen", 600.0], ["Jalen Hurts", 400.0]] or \
        m["top_subjects"] == [("Patrick Mahomes", 1000.0), ("Josh Allen", 600.0), ("Jalen Hurts", 400.0)]
    assert m["availability_pct"] == 100.0
    assert m["probes"] == {"qbs_with_v2_data_pct": 83.5, "broken_probe": None}


def test_conversions_per_arm(make_app) -> None:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10)
    app, _ = make_app(ext, V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 50})

    @app.post("/convert")
    def convert():
        ext.track_conversion("calc")
        return "", 204

    @ext.user_loader
    def uid():
        from flask import request
        return request.headers.get("X-User")

    client = app.test_client()
    arms = {}
    for i in range(200):
        r = client.get(f"/calc/{i}", headers={"X-User": f"u{i}"})
        arms[f"u{i}"] = r.get_json()["assigned"]
        if i % 4 == 0:
            client.post("/convert", headers={"X-User": f"u{i}"})
    with app.app_context():
        ext.flush()
        m = ext.metrics("calc")
    for arm in ("v1", "v2"):
        users = [u for u, a in arms.items() if a == arm]
        converted = [u for u in users if int(u[1:]) % 4 == 0]
        assert m["arms"][arm]["users"] == len(users)
        assert m["arms"][arm]["converted_users"] == len(converted)
        assert m["arms"][arm]["conversion_rate_pct"] == pytest.approx(len(converted) / len(users) * 100)
    assert m["conversion_ratio"] == pytest.approx(
        m["arms"]["v2"]["conversion_rate_pct"] / m["arms"]["v1"]["conversion_rate_pct"])


def test_unhandled_errors_are_counted_once_and_lower_availability(make_app) -> None:
    ext = V2Rollout()

    def v1(x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x

    ext.register("calc", v1=v1, v2=v1)
    app, _ = make_app(ext)
    with app.app_context():
        for x in (-1, -2, 3, 4):
            try:
                ext.calculate("calc", x, user_id="u")
            except ValueError:
                pass
        ext.flush()
        m = ext.metrics("calc")
    assert m["arms"]["v1"]["calculations"] == 4
    assert m["arms"]["v1"]["unhandled"] == 2 and m["arms"]["v1"]["errors_by_type"] == {"ValueError": 2}
    assert m["availability_pct"] == 50.0


def test_store_down_during_traffic_loses_and_doubles_nothing(make_app, tmp_path: Path) -> None:
    db = tmp_path / "metrics.db"
    app, ext = metrics_app(make_app, V2ROLLOUT_DATABASE_URI=f"sqlite:///{db}",
                           V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 50})
    with app.app_context():
        for i in range(300):
            ext.calculate("calc", {"i": i, "player": "A"}, user_id=f"u{i}")
        assert ext.flush()
        con = sqlite3.connect(db)
        con.execute("ALTER TABLE v2rollout_minute_counters RENAME TO v2rollout_minute_counters_away")
        con.commit()
        for _ in range(3):
            for i in range(100):
                ext.calculate("calc", {"i": i, "player": "A"}, user_id=f"u{i}")
            assert not ext.flush()
        health = ext.health()["metrics"]
        assert health["backlog"] == 3 and health["flush_failures"] == 3
        con.execute("ALTER TABLE v2rollout_minute_counters_away RENAME TO v2rollout_minute_counters")
        con.commit()
        con.close()
        assert ext.flush()
        assert ext.health()["metrics"]["backlog"] == 0
        m = ext.metrics("calc")
    assert m["arms"]["v1"]["calculations"] + m["arms"]["v2"]["calculations"] == 600
    assert m["db_errors"] == 3


def test_a_batch_applied_twice_is_counted_once(tmp_path: Path) -> None:
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    metadata.create_all(engine)
    recorder = Recorder()
    store = MetricStore(lambda: engine, recorder, ensure_tables=lambda: None)
    now = time.time()
    batch = Batch({("calc", "v1", int(now // 60) * 60, "calculations", ""): 7.0}, {})
    store._apply("batch-1", batch)
    store._apply("batch-1", batch)  # a retry after a commit whose acknowledgement was lost
    assert store.window("calc", 300)["arms"]["v1"]["calculations"] == 7


def test_retention_prunes_old_rows_at_flush(make_app) -> None:
    app, ext = metrics_app(make_app, V2ROLLOUT_METRICS_RETENTION_DAYS=30)
    old = time.time() - 40 * 86400
    with app.app_context():
        state = app.extensions["v2rollout"]
        state.recorder.clock = lambda: old
        ext.calculate("calc", {"i": 2, "player": "A"}, user_id="old")
        assert state.metric_store.flush()  # written, not yet pruned
        assert ext.metrics("calc", "31d", now=old)["arms"]["v1"]["calculations"] == 1
        state.recorder.clock = time.time
        ext.calculate("calc", {"i": 2, "player": "A"}, user_id="new")
        assert ext.flush()  # a flush cycle prunes rows past the retention
        assert ext.metrics("calc", "31d", now=old)["arms"]["v1"]["calculations"] == 0
        assert ext.metrics("calc", "5m")["arms"]["v1"]["calculations"] == 1


def test_series_gives_one_point_per_minute(make_app) -> None:
    from flask_v2rollout.testing import Clock, use_clock

    app, ext = metrics_app(make_app)
    # A clock that stays inside one minute: on the real one, a minute turning between the calls and the read
    # would leave the 30 calls in the point before the last.
    with app.app_context(), use_clock(app, Clock(start=1_900_000_020)):
        for i in range(30):
            ext.calculate("calc", {"i": i, "player": "A"}, user_id="u")
        ext.flush()
        points = ext.series("calc", "1h")
    assert len(points) == 60
    assert points[-1]["arms"]["v1"]["calculations"] == 30
    assert all(p["minute"] % 60 == 0 for p in points)


def conversion_app(make_app):
    """An app whose ``/visit`` calculates and whose ``/convert`` calculates and converts (a sticky anonymous user)."""
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x)
    app, _ = make_app(ext)

    @app.post("/visit")
    def visit():
        ext.calculate("calc", 1)
        return "", 204

    @app.post("/convert")
    def convert():
        ext.calculate("calc", 1)
        ext.track_conversion("calc")
        return "", 204

    return app, ext


def test_a_returning_user_counts_once_at_their_first_exposure(make_app) -> None:
    from flask_v2rollout.testing import Clock, use_clock

    app, ext = conversion_app(make_app)
    clock = Clock(start=1_900_000_020)
    with use_clock(app, clock):
        client = app.test_client()
        client.post("/convert")
        with app.app_context():
            ext.flush()
        clock.advance(minutes=10)
        client.post("/convert")  # the same (sticky anonymous) user, ten minutes later
        with app.app_context():
            ext.flush()
            since_first = ext.metrics("calc", "15m")["arms"]["v1"]
            recent = ext.metrics("calc", "5m")["arms"]["v1"]
    # users are counted where they were first seen (since the last percentage change), once
    assert (since_first["users"], since_first["converted_users"]) == (1, 1)
    assert (recent["users"], recent["converted_users"]) == (0, 0)
    assert recent["conversions"] == 1


def test_fallback_reasons_count_by_code(make_app) -> None:
    ext = V2Rollout()

    def v2(x: int) -> int:
        raise Fallback(f"insufficient_weeks: player {x} has 1 week")

    ext.register("calc", v1=lambda x: x, v2=v2, defaults={"v2_rollout_percentage": 100})
    app, _ = make_app(ext)
    with app.app_context():
        outcomes = [ext.calculate("calc", i, user_id="u") for i in range(5)]
        ext.flush()
        reasons = ext.metrics("calc")["arms"]["v2"]["fallbacks_by_reason"]
    assert reasons == {"insufficient_weeks": 5}
    assert outcomes[3].fallback_reason == "insufficient_weeks: player 3 has 1 week"


def test_compaction_folds_shards_into_hours_and_windows_read_the_same(make_app) -> None:
    from flask_v2rollout.testing import Clock, use_clock

    app, ext = metrics_app(make_app, V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 50})
    clock = Clock(start=1_900_000_000)  # 38 min 40 s into an hour
    with app.app_context(), use_clock(app, clock):
        state = app.extensions["v2rollout"]
        for step in range(40):  # every 7 minutes for 4 h 33 min: partial first and last hours, whole ones between
            for i in range(5):
                ext.calculate("calc", {"i": step * 5 + i, "player": f"P{i}"}, user_id=f"u{step}-{i}")
            assert state.metric_store.flush()
            clock.advance(minutes=7)
        windows = ("30m", "2h", "3h", "6h")
        before = {w: ext.metrics("calc", w) for w in windows}
        series_before = ext.series("calc", "6h")
        folded = state.metric_store.compact(now=clock())
        after = {w: ext.metrics("calc", w) for w in windows}
        assert state.metric_store.compact(now=clock()) == 0  # nothing left to fold
        assert ext.series("calc", "6h") == series_before
    assert folded > 0
    assert after == before
    assert sum(after["6h"]["arms"][a]["calculations"] for a in ("v1", "v2")) == 200
    assert sum(after["6h"]["arms"][a]["users"] for a in ("v1", "v2")) == 200
    assert 0 < sum(after["2h"]["arms"][a]["calculations"] for a in ("v1", "v2")) < 200


def test_users_count_anew_after_a_percentage_change(make_app, tmp_path: Path) -> None:
    from flask_v2rollout.testing import Clock, use_clock

    db = tmp_path / "users.db"
    app, ext = metrics_app(make_app, V2ROLLOUT_DATABASE_URI=f"sqlite:///{db}",
                           V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 10})
    clock = Clock(start=1_900_000_020)
    with app.app_context(), use_clock(app, clock):
        for i in range(100):
            ext.calculate("calc", {"i": 2, "player": "A"}, user_id=f"u{i}")
        assert ext.flush()
        with sqlite3.connect(db) as con:
            assert con.execute("SELECT count(*) FROM v2rollout_exposures").fetchone() == (100,)
        clock.advance(minutes=5)
        ext.set_flag("calc", "v2_rollout_percentage", 5, actor="ops", reason="reduce")
        with sqlite3.connect(db) as con:  # the rows of who was seen before the change are gone
            assert con.execute("SELECT count(*) FROM v2rollout_exposures").fetchone() == (0,)
        clock.advance(minutes=1)
        for i in range(100):  # the same users again: new since the change, counted once more
            ext.calculate("calc", {"i": 2, "player": "A"}, user_id=f"u{i}")
            ext.calculate("calc", {"i": 2, "player": "A"}, user_id=f"u{i}")
        assert ext.flush()
        since_change = ext.metrics("calc", "2m")["arms"]
        whole = ext.metrics("calc", "10m")["arms"]
    assert since_change["v1"]["users"] + since_change["v2"]["users"] == 100
    assert whole["v1"]["users"] + whole["v2"]["users"] == 200


def test_flush_ids_are_kept_six_hours(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, insert, select

    from flask_v2rollout.models import flushes_table

    engine = create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    metadata.create_all(engine)
    store = MetricStore(lambda: engine, Recorder(), ensure_tables=lambda: None)
    now = time.time()
    with engine.begin() as conn:
        conn.execute(insert(flushes_table), [{"batch_id": "old", "flushed_at": int(now - 7 * 3600)},
                                              {"batch_id": "recent", "flushed_at": int(now - 5 * 3600)}])
    store.prune(30, now=now)
    with engine.connect() as conn:
        assert conn.execute(select(flushes_table.c.batch_id)).scalars().all() == ["recent"]


def test_subjects_are_the_real_top_and_capped_per_minute_per_process() -> None:
    from flask_v2rollout.metrics.recorder import OTHER, SUBJECT, SUBJECTS_PER_MINUTE

    minute_start = 1_900_000_020.0
    clock = [minute_start]
    recorder = Recorder(clock=lambda: clock[0])

    def call(subject: str) -> None:
        recorder.calculation(Outcome(rollout="calc", assigned="v1", version="v1", value=1, fallback_reason=None,
                                     duration_ms=1.0),
                             subject=subject)

    written: dict[str, float] = {}
    for take in range(5):  # five flushes inside one minute, each with 300 one-off subjects and two heavy ones
        for i in range(300):
            call(f"rare-{take}-{i}")
            if i % 3 == 0:
                call("heavy-a")
            if i % 5 == 0:
                call("heavy-b")
        clock[0] += 10
        for (_r, _a, _m, metric, key), value in recorder.take().counters.items():
            if metric == SUBJECT:
                written[key] = written.get(key, 0.0) + value
    assert len(set(written) - {OTHER}) <= SUBJECTS_PER_MINUTE
    assert sum(written.values()) == 5 * (300 + 100 + 60)  # nothing lost: the rest is under OTHER
    top = sorted(written.items(), key=lambda kv: -kv[1])[:3]
    assert [k for k, _ in top if k != OTHER][:2] == ["heavy-a", "heavy-b"]
    assert written["heavy-a"] <= 500 and written["heavy-b"] <= 300  # never more than seen
    assert written["heavy-a"] >= 400  # space-saving keeps a subject seen more than total / capacity

def _exposure_rows_sent(engine) -> list[int]:
    """Rows each INSERT into v2rollout_exposures sends (what a flush writes of its users)."""
    from sqlalchemy import event

    from flask_v2rollout.models import exposures_table

    sent: list[int] = []

    @event.listens_for(engine, "before_execute")
    def count(_conn, clause, multiparams, _params, _options) -> None:
        if getattr(clause, "table", None) is exposures_table and clause.is_insert:
            sent.append(len(multiparams))

    return sent


def test_a_flush_sends_only_users_not_written_before_and_a_change_elsewhere_counts_them_anew(
        make_app, tmp_path: Path) -> None:
    from flask_v2rollout.testing import Clock, use_clock

    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    app, ext = metrics_app(make_app, V2ROLLOUT_DATABASE_URI=uri, V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 10})
    other = V2Rollout()  # another process of the same host, sharing the database
    other.register("calc", v1=lambda req: float(req["i"]), v2=lambda req: float(req["i"]))
    other_app, _ = make_app(other, instance="other", V2ROLLOUT_DATABASE_URI=uri)
    clock = Clock(start=1_900_000_020)

    def calls(users: range) -> None:
        for i in users:
            ext.calculate("calc", {"i": 2, "player": "A"}, user_id=f"u{i}")

    with app.app_context(), use_clock(app, clock), use_clock(other_app, clock):
        sent = _exposure_rows_sent(app.extensions["v2rollout"].engine())
        calls(range(20))
        assert ext.flush()
        clock.advance(seconds=15)
        calls(range(25))
        assert ext.flush()
        assert sent == [20, 5]  # only the five users never written
        clock.advance(minutes=5)
        with other_app.app_context():
            other.set_flag("calc", "v2_rollout_percentage", 5, actor="ops", reason="reduce")
        clock.advance(minutes=1)
        calls(range(25))
        assert ext.flush()  # their rows were deleted: every user is sent, and counted as new since the change
        since_change = ext.metrics("calc", "2m")["arms"]
    assert sent[2] == 25
    assert since_change["v1"]["users"] + since_change["v2"]["users"] == 25


def test_a_remembered_user_who_converts_is_counted_as_converted(make_app) -> None:
    from flask_v2rollout.testing import Clock, use_clock

    app, ext = conversion_app(make_app)
    clock = Clock(start=1_900_000_020)
    with use_clock(app, clock):
        client = app.test_client()
        for _ in range(2):  # written, then remembered
            client.post("/visit")
            with app.app_context():
                assert ext.flush()
            clock.advance(seconds=15)
        client.post("/convert")
        with app.app_context():
            assert ext.flush()
            arm = ext.metrics("calc", "5m")["arms"]["v1"]
    assert (arm["users"], arm["converted_users"], arm["conversions"]) == (1, 1, 1)


def test_the_daily_prune_of_exposure_rows_makes_every_process_send_its_users_again(make_app, tmp_path: Path) -> None:
    from flask_v2rollout.testing import Clock, use_clock

    uri = f"sqlite:///{tmp_path / 'shared.db'}"
    app, ext = metrics_app(make_app, V2ROLLOUT_DATABASE_URI=uri, V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 10})
    clock = Clock(start=1_900_000_020)
    with app.app_context(), use_clock(app, clock):
        sent = _exposure_rows_sent(app.extensions["v2rollout"].engine())
        store = app.extensions["v2rollout"].metric_store
        for _ in range(2):
            for i in range(10):
                ext.calculate("calc", {"i": 2, "player": "A"}, user_id=f"u{i}")
            assert ext.flush()
            clock.advance(days=1)
        assert sent == [10]  # the second flush sent nobody: all ten were remembered
        store.prune(retention_days=3, now=clock() + 86400 + 3600)  # an hour past the rows, but not their day
        for i in range(10):
            ext.calculate("calc", {"i": 2, "player": "A"}, user_id=f"u{i}")
        assert ext.flush() and sent == [10]
        store.prune(retention_days=1, now=clock() + 86400)  # now it is: their rows are deleted
        for i in range(10):
            ext.calculate("calc", {"i": 2, "player": "A"}, user_id=f"u{i}")
        assert ext.flush()
        users = ext.metrics("calc", "1h")["arms"]
    assert sent == [10, 10]  # sent again, and counted again: their rows were gone
    assert users["v1"]["users"] + users["v2"]["users"] == 10
