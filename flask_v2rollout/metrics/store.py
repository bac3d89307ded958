"""Metrics in SQL: flush per-process batches exactly once, read merged windows back.

Each flush is one transaction that first inserts the batch's id into
``v2rollout_flushes`` and then adds its counters with an atomic upsert-add
(``INSERT … ON CONFLICT DO UPDATE SET value = value + excluded.value``), which
is correct under concurrent writers on SQLite and PostgreSQL. A failed flush
keeps its batch and retries it; if a failure hid a commit that did happen, the
retry meets the batch id and is skipped — nothing is counted twice or lost.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

from sqlalchemy import Engine, and_, case, delete, func, insert, select
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as SATimeoutError

from ..errors import MissingTablesError, StoreFileError
from ..failures import FailureLog
from ..models import counters_table, exposures_table, flushes_table, probes_table
from .recorder import (
    DB_ERROR,
    GLOBAL,
    QUARANTINED,
    SUBJECT,
    ArmSummary,
    Batch,
    Recorder,
    ShadowSummary,
    minute_of,
    summarize_arm,
    summarize_shadow,
)

log = logging.getLogger("flask_v2rollout.metrics")


def _dialect_insert(engine_name: str) -> Callable[..., Any]:
    if engine_name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert
        return sqlite_insert
    if engine_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert
        return postgresql_insert
    raise RuntimeError(f"v2rollout metrics need SQLite or PostgreSQL, not {engine_name}")


class Window(TypedDict):
    """Merged figures of every process over one window (``V2Rollout.metrics()``)."""

    rollout: str
    window_s: int
    from_minute: int
    arms: dict[str, ArmSummary]
    shadow: dict[str, ShadowSummary]
    conversion_ratio: float | None
    top_subjects: list[tuple[str, float]]
    #: share of requests that calculated answered without a 5xx (of calls, when none answered)
    availability_pct: float | None
    db_errors: int
    #: counter rows SQL refused for good and dropped (app-wide)
    quarantined: int
    probes: dict[str, float | None]


class Minute(TypedDict):
    """One minute of a series (``V2Rollout.series()``)."""

    minute: int
    arms: dict[str, ArmSummary]
    shadow: ShadowSummary


class MetricStore:
    """Flushes a Recorder's batches to SQL and answers window queries."""

    def __init__(self, engine: Callable[[], Engine], recorder: Recorder, *,
                 ensure_tables: Callable[[], None], error_log_interval: float = 60.0) -> None:
        self._engine = engine
        self.recorder = recorder
        self._ensure_tables = ensure_tables
        self._retry: list[tuple[str, Batch]] = []
        self._lock = threading.Lock()
        #: rows SQL refused for good (dropped and counted), and why the last one was
        self.quarantined = 0
        self.last_quarantine: str | None = None
        self._failures = FailureLog(log, "metrics flush failed", interval_s=error_log_interval)

    # -- writing ---------------------------------------------------------------------
    def flush(self) -> bool:
        """Write everything pending (older failed batches first); False if SQL failed.

        A transient failure (connection lost, database locked) keeps the batch for the
        next flush. A batch SQL refuses for good is split in halves, each retried under
        its own id, until the rows it refuses are isolated: those are quarantined —
        dropped, counted with the reason (``health()``, ``metrics()["quarantined"]``) —
        and every other row lands, so one bad row never blocks the batches behind it.
        """
        with self._lock:
            batch = self.recorder.take()
            if batch:
                self._retry.append((uuid.uuid4().hex, batch))
            while self._retry:
                batch_id, pending = self._retry[0]
                try:
                    self._apply(batch_id, pending)
                except REFUSALS as exc:
                    if _transient(exc):
                        self.failed(exc)
                        return False
                    self._retry.pop(0)
                    self._retry[:0] = self._split(batch_id, pending, exc)
                    continue
                self._retry.pop(0)
            return True

    def _split(self, batch_id: str, batch: Batch, exc: BaseException) -> list[tuple[str, Batch]]:
        """Halves of a refused batch to retry, or (one row left) nothing: that row is quarantined."""
        counters, exposures = sorted(batch.counters.items()), sorted(batch.exposures.items())
        total = len(counters) + len(exposures)
        if total <= 1:
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            self.quarantined += 1
            self.last_quarantine = reason
            log.error("v2rollout: metrics row refused by SQL and dropped (%s): %r", reason, counters or exposures)
            self.recorder.quarantined(type(exc).__name__, 1)
            return []
        mid = total // 2
        cut = max(0, mid - len(counters))
        return [
            (f"{batch_id}.a", Batch(dict(counters[:mid]), dict(exposures[:cut]))),
            (f"{batch_id}.b", Batch(dict(counters[mid:]), dict(exposures[cut:]))),
        ]

    @property
    def backlog(self) -> int:
        """Batches waiting for SQL to come back."""
        return len(self._retry)

    @property
    def flush_failures(self) -> int:
        return self._failures.count

    @property
    def last_error(self) -> str | None:
        return self._failures.last_error

    def failed(self, exc: BaseException) -> None:
        """Count a failed SQL write of metrics work; its data stays queued."""
        self._failures.record(exc, f"{len(self._retry)} batch(es) kept for retry")
        self.recorder.db_failure("metrics")

    def _apply(self, batch_id: str, batch: Batch) -> None:
        self._ensure_tables()
        engine = self._engine()
        upsert = _dialect_insert(engine.dialect.name)
        try:
            with engine.begin() as conn:
                conn.execute(insert(flushes_table).values(batch_id=batch_id, flushed_at=int(time.time())))
                if batch.counters:
                    stmt = upsert(counters_table)
                    stmt = stmt.on_conflict_do_update(
                        index_elements=["rollout", "arm", "minute", "metric", "key"],
                        set_={"value": counters_table.c.value + stmt.excluded.value},
                    )
                    rows = [
                        {"rollout": r, "arm": a, "minute": m, "metric": metric, "key": k[:200], "value": v}
                        for (r, a, m, metric, k), v in sorted(batch.counters.items())
                    ]
                    conn.execute(stmt, rows)
                if batch.exposures:
                    stmt = upsert(exposures_table)
                    t, ex = exposures_table.c, stmt.excluded
                    stmt = stmt.on_conflict_do_update(
                        index_elements=["rollout", "arm", "user_key"],
                        set_={
                            "first_seen": case((ex.first_seen < t.first_seen, ex.first_seen), else_=t.first_seen),
                            "last_seen": case((ex.last_seen > t.last_seen, ex.last_seen), else_=t.last_seen),
                            # the latest conversion, so a window counts users who converted in it
                            "converted_at": case(
                                (t.converted_at.is_(None), ex.converted_at),
                                (ex.converted_at > t.converted_at, ex.converted_at),
                                else_=t.converted_at,
                            ),
                        },
                    )
                    rows = [
                        {"rollout": r, "arm": a, "user_key": u[:200], "first_seen": f, "last_seen": last,
                         "converted_at": conv}
                        for (r, a, u), (f, last, conv) in sorted(batch.exposures.items())
                    ]
                    conn.execute(stmt, rows)
        except IntegrityError as exc:
            if _is_duplicate_batch(exc):
                log.info("v2rollout: metrics batch %s was already applied; skipped", batch_id)
                return
            raise

    def record_probes(self, values: Mapping[str, float | None], now: float | None = None) -> None:
        """Store sampled probe values for this minute (last write wins)."""
        if not values:
            return
        self._ensure_tables()
        engine = self._engine()
        upsert = _dialect_insert(engine.dialect.name)
        minute = minute_of(time.time() if now is None else now)
        stmt = upsert(probes_table)
        stmt = stmt.on_conflict_do_update(index_elements=["name", "minute"], set_={"value": stmt.excluded.value})
        with engine.begin() as conn:
            conn.execute(stmt, [{"name": k, "minute": minute, "value": v} for k, v in sorted(values.items())])

    def prune(self, retention_days: float, now: float | None = None) -> int:
        """Delete metric rows older than the retention; returns rows deleted."""
        self._ensure_tables()
        cutoff = int((time.time() if now is None else now) - retention_days * 86400)
        deleted = 0
        with self._engine().begin() as conn:
            for stmt in (
                delete(counters_table).where(counters_table.c.minute < cutoff),
                delete(flushes_table).where(flushes_table.c.flushed_at < cutoff),
                delete(exposures_table).where(exposures_table.c.last_seen < cutoff),
                delete(probes_table).where(probes_table.c.minute < cutoff),
            ):
                deleted += conn.execute(stmt).rowcount or 0
        return deleted

    # -- reading -------------------------------------------------------------------------
    def window(self, rollout: str, window_s: int, now: float | None = None, *,
               since: float | None = None, bins: bool = False) -> Window:
        """Merged figures of every process over the last ``window_s`` seconds (or from ``since``).

        ``bins`` adds the merged latency histograms (for rank tests).
        """
        self._ensure_tables()
        now = time.time() if now is None else now
        end = minute_of(now)
        if since is not None:
            # The first whole minute after ``since``: a minute shared with the stage before
            # (the one a rollback happened in) is left out.
            start = minute_of(since) if since % 60 == 0 else minute_of(since) + 60
            window_s = max(60, end + 60 - start)
        else:
            start = minute_of(now - window_s + 60) if window_s >= 60 else end
        c = counters_table.c
        merged: defaultdict[str, defaultdict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        subjects: dict[str, float] = {}
        db_errors = quarantined = 0.0
        with self._engine().connect() as conn:
            rows = conn.execute(
                select(c.rollout, c.arm, c.metric, c.key, func.sum(c.value))
                .where(c.rollout.in_([rollout, GLOBAL]), c.minute >= start, c.minute <= end)
                .group_by(c.rollout, c.arm, c.metric, c.key)
            ).all()
            e = exposures_table.c
            users = {
                arm: (int(n), int(conv or 0))
                for arm, n, conv in conn.execute(
                    select(e.arm, func.count(),
                           func.sum(case((and_(e.converted_at >= start, e.converted_at < end + 60), 1), else_=0)))
                    .where(e.rollout == rollout, e.last_seen >= start, e.first_seen < end + 60)
                    .group_by(e.arm)
                ).all()
            }
            probes = self._latest_probes(conn, now)
        for r, arm, metric, key, value in rows:
            if r == GLOBAL:
                if metric == DB_ERROR:
                    db_errors += value
                elif metric == QUARANTINED:
                    quarantined += value
            elif metric == SUBJECT:
                subjects[key] = subjects.get(key, 0.0) + value
            else:
                merged[arm][metric][key] = value
        minutes = max(window_s / 60.0, 1 / 60.0)
        arms = {
            arm: summarize_arm(merged.get(arm, {}), minutes, *users.get(arm, (0, 0)), bins=bins)
            for arm in ("v1", "v2")
        }
        v1c, v2c = arms["v1"]["conversion_rate_pct"], arms["v2"]["conversion_rate_pct"]
        responses = sum(n for arm in arms.values() for n in arm["responses"].values())
        failed = sum(arm["responses"].get("5xx", 0) for arm in arms.values())
        if not responses:  # no request answered in the window (calls outside requests): the calls decide
            responses = arms["v1"]["calculations"] + arms["v2"]["calculations"]
            failed = arms["v1"]["unhandled"] + arms["v2"]["unhandled"]
        return {
            "rollout": rollout,
            "window_s": window_s,
            "from_minute": start,
            "arms": arms,
            "shadow": {arm: summarize_shadow(merged.get(arm, {}), bins=bins) for arm in ("v2", "v1")},
            "conversion_ratio": v2c / v1c if v1c and v2c is not None else None,
            "top_subjects": sorted(subjects.items(), key=lambda kv: (-kv[1], kv[0]))[:10],
            "availability_pct": (responses - failed) / responses * 100.0 if responses else None,
            "db_errors": int(db_errors),
            "quarantined": int(quarantined),
            "probes": probes,
        }

    def series(self, rollout: str, window_s: int, now: float | None = None) -> list[Minute]:
        """Per-minute figures over the window, oldest first (for charts)."""
        self._ensure_tables()
        now = time.time() if now is None else now
        start = minute_of(now - window_s + 60)
        c = counters_table.c
        per_minute: defaultdict[int, defaultdict[str, defaultdict[str, dict[str, float]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(dict))
        )
        with self._engine().connect() as conn:
            for minute, arm, metric, key, value in conn.execute(
                select(c.minute, c.arm, c.metric, c.key, c.value)
                .where(c.rollout == rollout, c.minute >= start, c.minute <= minute_of(now), c.metric != SUBJECT)
            ).all():
                per_minute[int(minute)][arm][metric][key] = value
        out: list[Minute] = []
        for minute in range(start, minute_of(now) + 60, 60):
            arms: Mapping[str, Mapping[str, Mapping[str, float]]] = per_minute.get(minute, {})
            out.append({
                "minute": minute,
                "arms": {arm: summarize_arm(arms.get(arm, {}), 1.0) for arm in ("v1", "v2")},
                "shadow": summarize_shadow(arms.get("v2", {})),
            })
        return out

    def _latest_probes(self, conn: Any, now: float) -> dict[str, float | None]:
        p = probes_table.c
        latest = (
            select(p.name, func.max(p.minute).label("minute"))
            .where(p.minute >= minute_of(now) - 86400)
            .group_by(p.name)
            .subquery()
        )
        rows = conn.execute(
            select(p.name, p.value).join(latest, and_(p.name == latest.c.name, p.minute == latest.c.minute))
        ).all()
        return {name: value for name, value in rows}


#: what a refused write can raise: SQLAlchemy's errors, and drivers' encoding errors it lets through
REFUSALS: tuple[type[BaseException], ...] = (SQLAlchemyError, UnicodeError, ValueError)


def _transient(exc: BaseException) -> bool:
    """A failure worth retrying later unchanged: the database is unreachable, locked, timed out or its file lost."""
    if isinstance(exc, (StoreFileError, MissingTablesError)):  # the file may come back, the migration run: keep it
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (OperationalError, InterfaceError, DisconnectionError, SATimeoutError))


def _is_duplicate_batch(exc: IntegrityError) -> bool:
    text = str(exc.orig).lower()
    return "v2rollout_flushes" in text or "batch_id" in text


class Flusher:
    """One thread per process: flush every interval, sample probes, prune, then run hooks.

    Started lazily in the process that records (fork-safe, like the shadow runner).
    """

    def __init__(self, store: MetricStore, *, interval_s: float, retention_days: float,
                 probes: Callable[[], dict[str, float | None]], after_flush: Callable[[], None],
                 before_flush: Callable[[], object] = lambda: None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._before_flush = before_flush
        self.clock = clock
        self.interval_s = interval_s
        self.retention_days = retention_days
        self._probes = probes
        self._after_flush = after_flush
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._last_prune = float("-inf")

    def ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            threading.Thread(target=self._loop, name="v2rollout-flusher", daemon=True).start()
            self._pid = os.getpid()

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval_s)  # a periodic background job, not a wait for another thread
            try:
                self.cycle()
            except Exception:  # a host probe or hook bug must not stop the flushing
                log.exception("v2rollout: metrics flush cycle failed")

    def cycle(self, *, hooks: bool = True) -> bool:
        """One round: count hung calls, flush, probes, prune (hourly), hooks (unless told not to).

        False when SQL failed.
        """
        self._before_flush()
        if not self.store.flush():
            return False
        try:
            self.store.record_probes(self._probes(), now=self.clock())
            if time.monotonic() - self._last_prune >= 3600:
                self.store.prune(self.retention_days, now=self.clock())
                self._last_prune = time.monotonic()
            if hooks:
                self._after_flush()
        except SQLAlchemyError as exc:
            self.store.failed(exc)
            return False
        return True
