"""The metric store at 30 days × 200 processes on PostgreSQL: window and gate reads, concurrent flushes, 1 M users.

Run: .venv/bin/python benchmarks/scale.py [--days 30] [--processes 200] [--users 1000000] [--seconds 20]

Starts a throwaway PostgreSQL 15 cluster with the tests' own helper (tests/e2e/support.py:
as user ``postgres`` when run as root, 127.0.0.1, a free port, fsync off), fills it
server-side with ``generate_series`` in the store's schema as 200 processes would
have left it after 30 days (minute rows compacted to shard 0, the last minutes still
in writer shards, hourly rollups, 6 h of flush batch ids, 1 M exposure rows of the
current percentage), then times through the public API, medians of ``--repeat``:

* ``metrics("24h")``, ``metrics("7d")``, ``metrics("30d")`` and ``gate()`` of a canary
  (10 %, entered 47 h ago) and of a full stage (entered 13.9 days ago);
* the rows each window reads (hourly + minute + pending shard rows), and the scans of
  ``v2rollout_exposures`` during those reads (none: users are per-minute counters);
* 8 processes offering 160 flushes/s in total for ``--seconds``: achieved rate and
  latency percentiles, with the writer shards and with every writer on one shard
  (how the rows were laid out before) in the same run.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))  # the tests' cluster helper

from flask import Flask  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from support import PostgresServer  # noqa: E402

from flask_v2rollout import V2Rollout  # noqa: E402
from flask_v2rollout.metrics import store as store_module  # noqa: E402
from flask_v2rollout.metrics.recorder import Batch, Recorder, minute_of  # noqa: E402
from flask_v2rollout.metrics.store import HOUR, MetricStore  # noqa: E402
from flask_v2rollout.models import metadata  # noqa: E402

CANARY, FULL = "canary_calc", "full_calc"
#: (arm, metric, key, per minute at 100 % of the traffic) of one arm
ARM_KEYS = (
    [("calculations", "", 1000.0), ("duration_ms_sum", "", 12_000.0), ("slow", "", 2.0),
     ("error", "KeyError", 1.0), ("error", "ValueError", 0.5), ("fallback", "insufficient_weeks", 50.0),
     ("fallback", "exception:KeyError", 1.0), ("response", "2xx", 1000.0), ("response", "5xx", 0.2),
     ("conversion", "", 120.0), ("new_users", "", 100.0), ("new_converters", "", 10.0)]
    + [("latency", str(b), 1000.0 / 30) for b in range(430, 460)]
)
SHADOW_KEYS = [("shadow", "EXACT", 50.0), ("shadow", "CLOSE", 20.0)] + [
    ("shadow_latency", str(b), 70.0 / 20) for b in range(440, 460)]
SUBJECTS = [(f"player-{i:02d}", 100.0 / (i + 1)) for i in range(50)]
#: share of the traffic per (rollout, arm): a canary at 10 %, a full rollout with v1 idle
SHARE = {(CANARY, "v1"): 0.9, (CANARY, "v2"): 0.1, (FULL, "v2"): 1.0}


def key_rows() -> list[tuple[str, str, str, str, float]]:
    rows = []
    for (rollout, arm), share in SHARE.items():
        rows += [(rollout, arm, metric, key, base * share) for metric, key, base in ARM_KEYS]
        rows += [(rollout, arm, metric, key, base * share) for metric, key, base in SHADOW_KEYS if arm == "v2"]
    for rollout in (CANARY, FULL):
        rows += [(rollout, "*", "subject", key, base) for key, base in SUBJECTS]
    return rows


def fill(uri: str, *, days: int, processes: int, users: int, now: float) -> dict[str, int]:
    """The store as ``processes`` processes flushing every 5 s would have left it; returns row counts."""
    engine = create_engine(uri)
    end = minute_of(now)
    first, compacted_to = end - days * 86400, end - 120  # the last two minutes are still in writer shards
    with engine.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE k (rollout text, arm text, metric text, key text, base float8)"))
        conn.execute(text("INSERT INTO k VALUES (:r, :a, :m, :k, :b)"),
                     [{"r": r, "a": a, "m": m, "k": k, "b": b} for r, a, m, k, b in key_rows()])
        # minute rows compacted into shard 0; the value varies by hour so the sums are not trivial
        conn.execute(text(
            "INSERT INTO v2rollout_minute_counters (rollout, minute, arm, metric, key, shard, value) "
            "SELECT k.rollout, m, k.arm, k.metric, k.key, 0, k.base * (0.8 + 0.1 * ((m / 3600) % 5)) "
            "FROM generate_series(:first, :last, 60) AS m, k"), {"first": first, "last": compacted_to})
        # what compaction has folded into hours is exactly the shard 0 minutes
        conn.execute(text(
            "INSERT INTO v2rollout_hour_counters (rollout, hour, arm, metric, key, value) "
            "SELECT rollout, minute - minute % 3600, arm, metric, key, sum(value) FROM v2rollout_minute_counters "
            "GROUP BY 1, 2, 3, 4, 5"))
        # the last two minutes: still in the writer shards 1–4 (several flushes overlapped)
        conn.execute(text(
            "INSERT INTO v2rollout_minute_counters (rollout, minute, arm, metric, key, shard, value) "
            "SELECT k.rollout, m, k.arm, k.metric, k.key, s, k.base / 4 "
            "FROM generate_series(:first, :last, 60) AS m, generate_series(1, 4) AS s, k"),
            {"first": compacted_to + 60, "last": end})
        # batch ids of the last 6 h (older ones are pruned): every process flushing every 5 s
        conn.execute(text(
            "INSERT INTO v2rollout_flushes (batch_id, flushed_at) "
            "SELECT md5(i::text), :now - (i % 21600) FROM generate_series(1, :n) AS i"),
            {"now": int(now), "n": processes * 6 * 720})
        # the canary's users since its percentage was set (1 in 10 in v2), a tenth converted
        conn.execute(text(
            "INSERT INTO v2rollout_exposures (rollout, arm, user_key, first_seen, last_seen, converted_at) "
            "SELECT :r, CASE WHEN i % 10 = 0 THEN 'v2' ELSE 'v1' END, 'user-' || i, t, t, "
            "CASE WHEN i % 10 = 3 THEN t + 60 END "
            "FROM generate_series(1, :n) AS i, LATERAL (SELECT :start + (i % 169200) AS t) AS f"),
            {"r": CANARY, "n": users, "start": int(now) - 47 * 3600})
        conn.execute(text("ANALYZE"))
        counts = {table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                  for table in ("v2rollout_minute_counters", "v2rollout_hour_counters", "v2rollout_flushes",
                                "v2rollout_exposures")}
        counts["pending shard rows"] = conn.execute(
            text("SELECT count(*) FROM v2rollout_minute_counters WHERE shard > 0")).scalar_one()
        size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
    engine.dispose()
    counts["database MB"] = size // 2**20
    return counts


def app_for(uri: str, root: Path) -> tuple[Flask, V2Rollout]:
    ext = V2Rollout()
    for name in (CANARY, FULL):
        ext.register(name, v1=abs, v2=abs)
    app = Flask("scale", instance_path=str(root / "instance"))
    app.config.update(V2ROLLOUT_DATABASE_URI=uri, V2ROLLOUT_EVALUATE_EVERY_S=10**9, V2ROLLOUT_METRICS_FLUSH_S=3600)
    ext.init_app(app)
    return app, ext


def stage_history(uri: str, ext: V2Rollout, app: Flask, now: float) -> None:
    """Audited percentage changes: the canary entered 47 h ago; the full rollout 13.9 days ago."""
    plan = {CANARY: [(10, 47 * 3600)], FULL: [(10, 30 * 86400), (50, 20 * 86400), (100, 13.9 * 86400)]}
    with app.app_context():
        for name, changes in plan.items():
            for pct, _ago in changes:
                ext.set_flag(name, "v2_rollout_percentage", pct, actor="bench", reason="scale fill")
    engine = create_engine(uri)
    with engine.begin() as conn:
        for name, changes in plan.items():
            ids = conn.execute(text("SELECT id FROM v2rollout_audit WHERE rollout = :r AND flag = "
                                    "'v2_rollout_percentage' ORDER BY id"), {"r": name}).scalars().all()
            for audit_id, (_pct, ago) in zip(ids, changes, strict=True):
                conn.execute(text("UPDATE v2rollout_audit SET created_at = to_timestamp(:t) WHERE id = :i"),
                             {"t": now - ago, "i": audit_id})
    engine.dispose()


def timed(fn: Any, repeat: int) -> tuple[float, Any]:
    fn()  # warm: connections, plans, caches
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), result


def rows_read(uri: str, rollout: str, seconds: int, now: float) -> int:
    """Rows a window reads: whole hours from the hourly rows (and their pending shards), the edges by minute."""
    stop = minute_of(now) + 60
    start = stop - seconds
    first_hour, last_hour = start + (-start) % HOUR, stop - stop % HOUR
    engine = create_engine(uri)
    with engine.connect() as conn:
        p = {"r": rollout, "s": start, "h0": first_hour, "h1": last_hour, "e": stop}
        n = conn.execute(text(
            "SELECT (SELECT count(*) FROM v2rollout_hour_counters WHERE rollout IN (:r, '*') AND hour >= :h0 "
            "AND hour < :h1) + (SELECT count(*) FROM v2rollout_minute_counters WHERE rollout IN (:r, '*') AND "
            "((minute >= :s AND minute < :h0) OR (minute >= :h1 AND minute < :e) OR "
            "(shard > 0 AND minute >= :h0 AND minute < :h1)))"), p).scalar_one()
    engine.dispose()
    return int(n)


def exposure_scans(uri: str) -> tuple[int, int]:
    engine = create_engine(uri)
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0), coalesce(seq_tup_read, 0) + "
            "coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables WHERE relname = 'v2rollout_exposures'")).one()
    engine.dispose()
    return int(row[0]), int(row[1])


class OneBatch(Recorder):
    """Hands the store the batch the writer built (a process's 5 s of counts), as a Recorder would."""

    batch = Batch({}, {})

    def take(self) -> Batch:
        batch, self.batch = self.batch, Batch({}, {})
        return batch


# -- contention --------------------------------------------------------------------------------------------------
def writer(uri: str, rate: float, seconds: float, one_shard: bool, start_at: float, out: Any) -> None:
    """One process: a flush every 1/rate s on a fixed schedule; each flush one realistic batch."""
    if one_shard:
        store_module.SHARDS = 1  # every writer adds to the same rows: how they were laid out before
    engine = create_engine(uri, pool_size=2)
    recorder = OneBatch()
    store = MetricStore(lambda: engine, recorder, ensure_tables=lambda: None)
    latencies: list[float] = []
    done = 0
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        minute = minute_of(time.time())
        counters: dict[Any, float] = {}
        for arm, share in (("v1", 0.9), ("v2", 0.1)):
            for metric, key, base in ARM_KEYS:
                if metric not in ("new_users", "new_converters"):
                    counters[(CANARY, arm, minute, metric, key)] = max(1.0, base * share / 12)
        for key, base in SUBJECTS[:20]:
            counters[(CANARY, "*", minute, "subject", key)] = base / 12
        now_s = int(time.time())
        exposures = {(CANARY, "v2" if j % 10 == 0 else "v1", f"bench-{uuid.uuid4().hex[:12]}"):
                     (now_s, now_s, now_s if j % 10 == 3 else None) for j in range(60)}
        recorder.batch = Batch(counters, exposures)
        begin = time.perf_counter()
        ok = store.flush()
        latencies.append((time.perf_counter() - begin) * 1000.0)
        done += ok
    elapsed = time.perf_counter() - t0
    out.put((done, elapsed, latencies))


def contention(uri: str, *, processes: int, total_rate: float, seconds: float, one_shard: bool) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0  # every writer imported and connected first
    procs = [ctx.Process(target=writer, args=(uri, total_rate / processes, seconds, one_shard, start_at, out))
             for _ in range(processes)]
    for p in procs:
        p.start()
    results = [out.get(timeout=seconds * 10 + 120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    done = sum(r[0] for r in results)
    elapsed = max(r[1] for r in results)
    lat = sorted(x for r in results for x in r[2])
    return {"offered": total_rate, "achieved": done / elapsed, "flushes": done,
            "p50": lat[len(lat) // 2], "p95": lat[int(len(lat) * 0.95)], "p99": lat[int(len(lat) * 0.99)]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--processes", type=int, default=200)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="v2rollout-scale-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # the postgres user must reach its data directory inside
        (root / "pg").mkdir()
        server = PostgresServer(root / "pg")
        server.start()
        try:
            run(server, root, args)
        finally:
            server.stop()


def run(server: PostgresServer, root: Path, args: argparse.Namespace) -> None:
    uri = server.create_database("scale")
    engine = create_engine(uri)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ALTER SYSTEM SET shared_buffers = '256MB'"))  # applies after the restart below
    engine.dispose()
    server.stop()
    server.start()
    engine = create_engine(uri)
    metadata.create_all(engine)
    with engine.connect() as conn:
        fsync = conn.execute(text("SHOW fsync")).scalar_one()
        version = conn.execute(text("SHOW server_version")).scalar_one()
    engine.dispose()
    now = time.time()
    app, ext = app_for(uri, root)
    stage_history(uri, ext, app, now)
    started = time.perf_counter()
    counts = fill(uri, days=args.days, processes=args.processes, users=args.users, now=now)
    print(f"PostgreSQL {version}, fsync={fsync}; fill of {args.days} days × {args.processes} processes "
          f"in {time.perf_counter() - started:.1f} s:")
    for table, n in counts.items():
        print(f"  {table:28s} {n:>12,}")

    print(f"\nreads through the public API, median of {args.repeat} (ms):")
    time.sleep(1.5)  # a backend reports its table statistics once idle a moment: the fill's and flag changes' first
    scans_before = exposure_scans(uri)
    figures: dict[str, float] = {}
    with app.app_context():
        for window in ("24h", "7d", "30d"):
            ms, m = timed(lambda w=window: ext.metrics(CANARY, w), args.repeat)
            figures[f"metrics({window})"] = ms
            print(f"  metrics({window:3s})            {ms:8.2f}   users v1/v2 {m['arms']['v1']['users']:,}/"
                  f"{m['arms']['v2']['users']:,}, rows read {rows_read(uri, CANARY, _seconds(window), now):,}")
        for label, name in (("canary", CANARY), ("full", FULL)):
            ms, g = timed(lambda n=name: ext.gate(n), args.repeat)
            figures[f"gate({label})"] = ms
            print(f"  gate({label:6s})            {ms:8.2f}   stage {g['stage']}, decision {g['decision']}")
    time.sleep(1.5)
    scans_after = exposure_scans(uri)
    print(f"  v2rollout_exposures scans during these reads: {scans_after[0] - scans_before[0]} "
          f"(rows read {scans_after[1] - scans_before[1]}); rows in it {counts['v2rollout_exposures']:,}")

    print(f"\ncontention: 8 processes offering 160 flushes/s in total for {args.seconds:.0f} s "
          "(each flush: ~120 counter rows, 60 new users):")
    for label, one in (("writer shards", False), ("one shard (old layout)", True)):
        r = contention(uri, processes=8, total_rate=160.0, seconds=args.seconds, one_shard=one)
        print(f"  {label:24s} achieved {r['achieved']:6.1f}/s ({r['flushes']:.0f} flushes)  p50 {r['p50']:6.2f} ms  "
              f"p95 {r['p95']:6.2f} ms  p99 {r['p99']:6.2f} ms")
        figures[label] = r["p95"]
    print("\ngoals: metrics(24h) ≤ 50 ms, metrics(30d) ≤ 200 ms, gate() ≤ 100 ms; ≥ 150 flushes/s with p95 ≤ 50 ms")


def _seconds(window: str) -> int:
    return int(window[:-1]) * {"h": 3600, "d": 86400}[window[-1]]


if __name__ == "__main__":
    main()
