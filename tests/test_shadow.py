"""Shadow runs happen off the request path: bounded, sampled, timed out, compared, counted."""
from __future__ import annotations

import json
import multiprocessing as mp
import threading
import time
from pathlib import Path

import pytest

import procs
from flask_v2rollout import Fallback, V2Rollout, signals
from flask_v2rollout.compare import CLOSE, EXACT, MODERATE, compare_values
from flask_v2rollout.shadow import ShadowJob, ShadowRunner
from helpers import WAIT_S, join, recv


def edges(value: float) -> dict:
    return {"edges": [{"edge": value, "metadata": {"data_source": "test"}}]}


@pytest.mark.parametrize("v1,v2,expected", [
    (5.0, 5.0, EXACT), (5.0, 5.99, EXACT), (5.0, 6.0, CLOSE), (5.0, 2.01, CLOSE),
    (5.0, 8.0, MODERATE), (5.0, -5.0, MODERATE), (0.0, 0.5, EXACT),
])
def test_comparison_classes_on_known_pairs(v1: float, v2: float, expected: str) -> None:
    comparison = compare_values(edges(v1), edges(v2), extract=lambda v: v["edges"][0]["edge"])
    assert comparison.agreement == expected
    assert comparison.difference == pytest.approx(abs(v2 - v1))
    assert comparison.difference_pct == (pytest.approx(abs(v2 - v1) / v1 * 100) if v1 > 0 else 0.0)


def shadow_app(make_app, v2, *, compare=None, dual_run=False, **config):
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: edges(float(x)), v2=v2, extract="edges.0.edge",
                 compare=compare, dual_run=dual_run, subject=lambda x: f"subject-{x % 7}",
                 metadata=lambda value: value["edges"][0]["metadata"])
    config.setdefault("V2ROLLOUT_DEFAULTS", {"v2_shadow_mode_enabled": True})
    app, _ = make_app(ext, **config)
    return app, ext


def test_shadow_classes_including_fallback_and_error_and_log(make_app, tmp_path: Path) -> None:
    def v2(x: int) -> dict:
        if x == 3:
            raise Fallback("insufficient weeks")
        if x == 4:
            raise ZeroDivisionError("bad data")
        return edges({0: 0.5, 1: 3.0, 2: 10.0}[x])

    app, ext = shadow_app(make_app, v2, V2ROLLOUT_LOG_FILE="v2.jsonl")
    seen = []
    with app.app_context(), signals.shadow_compared.connected_to(lambda s, **kw: seen.append(kw), app):
        served = [ext.calculate("calc", x, user_id=f"u{x}") for x in range(5)]
        assert ext.drain(5)
        stats = ext.stats("calc")
    assert all(o.version == "v1" for o in served)  # users still get v1
    assert stats["v2"]["shadow"] == {"EXACT": 1, "CLOSE": 1, "MODERATE": 1, "fallback": 1, "v2_error": 1}
    assert stats["v2"]["shadow_diff_sum"][""] == pytest.approx(0.5 + 2.0 + 8.0)
    assert len(seen) == 5 and {kw["version"] for kw in seen} == {"v2"}
    records = [json.loads(line) for line in (tmp_path / "instance" / "v2.jsonl").read_text().splitlines()]
    shadow = sorted((r for r in records if r["event"] == "shadow_comparison"), key=lambda r: r["user_id"])
    assert [r["agreement"] for r in shadow] == ["EXACT", "CLOSE", "MODERATE", "fallback", "v2_error"]
    first = shadow[0]
    assert first["mode"] == "shadow" and first["v1_value"] == 0.0 and first["v2_value"] == 0.5
    assert first["difference"] == 0.5 and first["difference_pct"] == 0.0 and first["subject"] == "subject-0"
    assert first["v2_metadata"] == {"data_source": "test"}
    assert shadow[2]["difference_pct"] == 400.0  # |10 − 2| / 2 × 100


def test_host_comparator_is_honoured(make_app) -> None:
    calls = []

    def same_sign(v1, v2) -> str:
        calls.append((v1, v2))
        return "SAME_SIGN" if (v1["edges"][0]["edge"] >= 0) == (v2["edges"][0]["edge"] >= 0) else "FLIPPED"

    app, ext = shadow_app(make_app, lambda x: edges(-float(x)), compare=same_sign)
    with app.app_context():
        for x in (0, 1, 2):
            ext.calculate("calc", x, user_id="u")
        ext.drain(5)
        assert ext.stats("calc")["v2"]["shadow"] == {"SAME_SIGN": 1, "FLIPPED": 2}
    assert sorted(c[0]["edges"][0]["edge"] for c in calls) == [0.0, 1.0, 2.0]


def test_request_never_waits_for_v2(make_app) -> None:
    release = threading.Event()
    started = threading.Event()

    def slow_v2(x: int) -> dict:
        started.set()
        release.wait(WAIT_S)
        return edges(float(x))

    app, ext = shadow_app(make_app, slow_v2, V2ROLLOUT_SHADOW_TIMEOUT_MS=60_000)
    client = app.test_client()
    response = client.get("/calc/1")
    assert response.status_code == 200 and response.get_json()["version"] == "v1"
    assert started.wait(5)  # v2 is running in the background while the response is already out
    with app.app_context():
        assert ext.health()["shadow"]["pending"] == 1
        release.set()
        assert ext.drain(5)
        assert ext.stats("calc")["v2"]["shadow"] == {"EXACT": 1}


def test_v2_that_hangs_forever_is_timed_out_dropped_and_bounded(tmp_path) -> None:
    # In a fresh process, so the memory measured is this scenario's alone.
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    child = ctx.Process(target=procs.hanging_v2, args=(str(tmp_path), there))
    child.start()
    result = recv(here, timeout=120)
    join(child)
    stuck_limit = 2 + result["max_stuck"]
    assert result["timeouts"] == stuck_limit  # the workers and their replacements, then no more threads
    assert result["pending"] == 1_000  # the queue is full, nothing beyond it is kept
    assert result["timeouts"] + result["drops"] + result["pending"] == 50_000  # every call accounted for
    assert result["calculations"] == 50_000
    assert result["max_call_ms"] < 500  # no call waited for the hanging v2 (timeout 20 ms, never reached)
    assert result["grown"] < 500_000, f"memory grew by {result['grown']} bytes over the last 20 000 calls"


def test_sample_quarter_shadows_a_quarter(make_app) -> None:
    app, ext = shadow_app(make_app, lambda x: edges(float(x)), V2ROLLOUT_SHADOW_SAMPLE=0.25,
                          V2ROLLOUT_SHADOW_QUEUE_SIZE=30_000)
    with app.app_context():
        for i in range(20_000):
            ext.calculate("calc", i, user_id=f"user-{i % 500}")
        assert ext.drain(30)
        shadowed = sum(ext.stats("calc")["v2"]["shadow"].values())
    print(f"sample 0.25: {shadowed:.0f} of 20 000 eligible calls shadowed")
    assert abs(shadowed / 20_000 - 0.25) <= 0.02, shadowed


def test_dual_run_compares_v1_for_v2_users(make_app) -> None:
    app, ext = shadow_app(make_app, lambda x: edges(float(x) + 2), dual_run=True,
                          V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 100})
    with app.app_context():
        for i in range(10):
            assert ext.calculate("calc", i, user_id=f"u{i}").version == "v2"
        ext.drain(5)
        stats = ext.stats("calc")
    assert stats["v1"]["shadow"] == {"CLOSE": 10}
    assert "shadow" not in stats.get("v2", {})


def test_no_shadow_when_off_or_for_v2_users(make_app) -> None:
    app, ext = shadow_app(make_app, lambda x: edges(float(x)),
                          V2ROLLOUT_DEFAULTS={"v2_shadow_mode_enabled": False})
    with app.app_context():
        for i in range(10):
            ext.calculate("calc", i, user_id=f"u{i}")
        ext.set_flags("calc", {"v2_shadow_mode_enabled": True, "v2_rollout_percentage": 100}, actor="t")
        for i in range(10):
            ext.calculate("calc", i, user_id=f"u{i}")
        ext.drain(5)
        assert "shadow" not in ext.stats("calc").get("v2", {})


def test_shutdown_drains_then_counts_the_rest_as_dropped() -> None:
    release = threading.Event()
    finished, dropped = [], []

    def job(i: int) -> ShadowJob:
        def run(j: ShadowJob) -> None:
            if i == 0:
                release.wait(WAIT_S)
            if j.claim():
                finished.append(i)
        return ShadowJob(run, lambda j: None, lambda j, why: dropped.append((i, why)), i)

    runner = ShadowRunner(workers=1, queue_size=10, timeout_s=60, shutdown_s=0.05)
    for i in range(5):
        assert runner.submit(job(i))
    assert runner.shutdown() == 4  # the first job blocks the only worker past shutdown_s
    assert sorted(dropped) == [(1, "shutdown"), (2, "shutdown"), (3, "shutdown"), (4, "shutdown")]
    assert not runner.submit(job(9)) and dropped[-1] == (9, "shutdown")
    release.set()
    deadline = time.monotonic() + 5
    while not finished and time.monotonic() < deadline:
        runner.drain(0.05)
    assert finished == [0]
