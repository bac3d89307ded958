"""Metrics in SQL: flush per-process batches exactly once, read merged windows back.

Each flush is one transaction that first inserts the batch's id into
``v2rollout_flushes`` and then adds its counters with an atomic upsert-add
(``INSERT … ON CONFLICT DO UPDATE SET value = value + excluded.value``), which
is correct under concurrent writers on SQLite and PostgreSQL. A failed flush
keeps its batch and retries it; if a failure hid a commit that did happen, the
retry meets the batch id and is skipped — nothing is counted twice or lost.
Batch ids are kept :data:`FLUSH_IDS_KEPT_S`, far longer than a retry waits.

Writers add to a *shard* of the minute rows (on PostgreSQL the first shard no
concurrent flush holds, taken with a transaction advisory lock), so flushes never
queue on each other's row locks. :meth:`MetricStore.compact` folds the shards of
closed minutes into shard 0 and into hourly rows, in one transaction; a window
reads whole hours from the hourly rows, its partial first and last hours from the
minute rows, and the shards not yet compacted from both — a bounded number of rows
for any window up to the retention.

Users are never counted from per-user rows at read time: a flush inserts the users
it saw into ``v2rollout_exposures`` (``ON CONFLICT DO NOTHING``) and counts the rows
that were new as :data:`NEW_USERS` at the minute of the first exposure, and a first
conversion as :data:`NEW_CONVERTERS` at that same minute. The exposure rows are
deleted at each percentage change (:meth:`MetricStore.restart_users`), so a
window's users are the users first seen in it since the last change.

A process remembers the exposure rows it wrote (at most :data:`KNOWN_USERS_MAX`) and
sends a remembered user again only with a conversion, so a flush costs what is new,
not every active user. Every deletion of exposure rows bumps a count in
``v2rollout_exposure_resets`` in the deleting transaction, holding an exclusive lock
of that count (PostgreSQL: a transaction advisory lock, whose queue is fair); a flush
reads the counts of its rollouts holding their shared locks and trusts its memory
only while the counts hold, so a deletion either waits for the flush or is seen by
it. On SQLite the flush's first statement takes the database's write lock.
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

from sqlalchemy import Engine, and_, delete, func, insert, select, text, tuple_, union_all, update
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
from ..models import (
    counters_table,
    exposure_resets_table,
    exposures_table,
    flushes_table,
    hour_counters_table,
    probes_table,
)
from .recorder import (
    DB_ERROR,
    GLOBAL,
    NEW_CONVERTERS,
    NEW_USERS,
    QUARANTINED,
    SUBJECT,
    ArmSummary,
    Batch,
    Key,
    Recorder,
    ShadowSummary,
    minute_of,
    summarize_arm,
    summarize_shadow,
)

log = logging.getLogger("flask_v2rollout.metrics")

#: how long applied batch ids are kept to skip a retried batch (a retry comes at the next flush
#: after SQL answers again; a commit whose confirmation was lost is retried within seconds)
FLUSH_IDS_KEPT_S = 6 * 3600
#: shards of the minute rows writers spread over (PostgreSQL; SQLite has one writer at a time)
SHARDS = 32
#: advisory lock namespaces (PostgreSQL): a writer's shard, and the one compaction at a time
_SHARD_LOCKS, _COMPACTION_LOCK, _RESETS_LOCKS = 0x7632_0001, 0x7632_0002, 0x7632_0003
HOUR = 3600
#: how often a process tries to compact (one at a time does, on PostgreSQL)
COMPACT_EVERY_S = 30.0
#: exposure rows a process remembers having written; past it the memory starts again
KNOWN_USERS_MAX = 50_000
#: the ``v2rollout_exposure_resets`` row the retention prune bumps (a rollout's own row: its restarts)
_PRUNED = ""
DAY = 86400
#: exposure rows the prune deletes per transaction (each its own short lock of the prune's count)
PRUNE_CHUNK = 5000

User = tuple[str, str, str]  # (rollout, arm, user key)
Resets = tuple[int, int]  # (the rollout's restarts, the prunes) read in a flush


class _WrittenUsers:
    """The exposure rows this process wrote, per rollout, under the reset counts they were written at.

    Used by the flushing thread only (under the store's flush lock).
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._rows: dict[str, tuple[Resets, set[User]]] = {}
        self._size = 0

    def known(self, resets: Mapping[str, Resets]) -> dict[str, set[User]]:
        """The remembered rows of each rollout whose counts still hold."""
        found: dict[str, set[User]] = {}
        for rollout, counts in resets.items():
            entry = self._rows.get(rollout)
            if entry is not None and entry[0] == counts:
                found[rollout] = entry[1]
        return found

    def remember(self, resets: Mapping[str, Resets], written: list[User]) -> None:
        """After the commit: ``written`` are in SQL, as of ``resets``."""
        if self._size + len(written) > self._limit:
            self._rows, self._size = {}, 0
        for key in written:
            counts = resets[key[0]]
            entry = self._rows.get(key[0])
            if entry is None or entry[0] != counts:
                if entry is not None:
                    self._size -= len(entry[1])
                entry = self._rows[key[0]] = (counts, set())
            if key not in entry[1]:
                entry[1].add(key)
                self._size += 1


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
        self._written = _WrittenUsers(KNOWN_USERS_MAX)

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
                # the batch id goes in first: on PostgreSQL within the first statement (one round trip less)
                ident = {"batch_id": batch_id, "flushed_at": int(time.time())}
                claim: dict[str, Any] | None = ident
                if engine.dialect.name != "postgresql" or not batch:
                    conn.execute(insert(flushes_table).values(**ident))
                    claim = None
                counters = defaultdict(float, batch.counters)
                written: list[User] = []
                if batch.exposures:
                    resets = self._resets(conn, {r for r, _a, _u in batch.exposures})
                    written = self._count_users(conn, upsert, batch, counters, claim, self._written.known(resets))
                    claim = None
                if counters or claim is not None:
                    self._add_counters(conn, upsert, counters, claim)
        except IntegrityError as exc:
            if _is_duplicate_batch(exc):
                log.info("v2rollout: metrics batch %s was already applied; skipped", batch_id)
                return
            raise
        if written:
            self._written.remember(resets, written)

    def _resets(self, conn: Any, rollouts: set[str]) -> dict[str, Resets]:
        """The reset counts of ``rollouts`` (and of the prune), their shared locks held until this flush commits:
        a deletion of exposure rows takes the exclusive lock before it bumps, so it waits for this flush or this
        flush sees its count. A count never bumped is 0."""
        t = exposure_resets_table.c
        names = sorted(rollouts | {_PRUNED})
        if conn.dialect.name == "postgresql":
            conn.execute(_PG_SHARE_RESETS, {"space": _RESETS_LOCKS, "names": names})
        counts = dict(conn.execute(select(t.rollout, t.resets).where(t.rollout.in_(names))).all())
        pruned = int(counts.get(_PRUNED, 0))
        return {r: (int(counts.get(r, 0)), pruned) for r in rollouts}

    @staticmethod
    def _bump_resets(conn: Any, name: str) -> None:
        """Before deleting exposure rows: every process's memory of them under the old count is void."""
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:space, hashtext(:name))"),
                         {"space": _RESETS_LOCKS, "name": name})
        stmt = _dialect_insert(conn.dialect.name)(exposure_resets_table).values(rollout=name, resets=1)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["rollout"], set_={"resets": exposure_resets_table.c.resets + 1}))

    def _add_counters(self, conn: Any, upsert: Callable[..., Any], counters: Mapping[Key, float],
                      claim: Mapping[str, Any] | None = None) -> None:
        """Add the batch's counters to this flush's shard: on PostgreSQL the lowest one no concurrent flush
        holds, in one statement over arrays (few shards used when flushes rarely overlap); on SQLite, which
        has one writer at a time, shard 1."""
        rows: defaultdict[Key, float] = defaultdict(float)
        for (r, a, m, metric, k), v in counters.items():
            rows[(r, a, m, metric, k[:200])] += v
        ordered = sorted(rows.items())
        if conn.dialect.name == "postgresql":
            columns = list(zip(*(key for key, _ in ordered), strict=True)) or [(), (), (), (), ()]
            conn.execute(_PG_ADD_COUNTERS[claim is not None], {
                "r": list(columns[0]), "a": list(columns[1]), "m": list(columns[2]), "mt": list(columns[3]),
                "k": list(columns[4]), "v": [v for _, v in ordered], "shards": SHARDS, "space": _SHARD_LOCKS,
                "fallback": 1 + os.getpid() % SHARDS, **(claim or {}),
            })
            return
        conn.execute(_adding_to_counters(upsert), [
            {"rollout": r, "arm": a, "minute": m, "metric": metric, "key": k, "shard": 1, "value": v}
            for (r, a, m, metric, k), v in ordered
        ])

    def _insert_users(self, conn: Any, upsert: Callable[..., Any],
                      seen: list[tuple[tuple[str, str, str], int, int | None]],
                      claim: Mapping[str, Any] | None) -> set[tuple[str, str, str]]:
        """Insert the users not there yet; returns those (PostgreSQL: one statement over arrays)."""
        e = exposures_table.c
        if not seen and claim is None:
            return set()
        if conn.dialect.name == "postgresql":
            inserted = conn.execute(_PG_INSERT_USERS[claim is not None], {
                "r": [key[0] for key, _, _ in seen], "a": [key[1] for key, _, _ in seen],
                "u": [key[2] for key, _, _ in seen], "f": [first for _, first, _ in seen],
                "c": [conv for _, _, conv in seen], **(claim or {}),
            }).all()
        else:
            stmt = upsert(exposures_table).on_conflict_do_nothing(index_elements=["rollout", "arm", "user_key"])
            inserted = conn.execute(stmt.returning(e.rollout, e.arm, e.user_key), [
                {"rollout": r, "arm": a, "user_key": u, "first_seen": first, "last_seen": first, "converted_at": conv}
                for (r, a, u), first, conv in seen
            ]).all()
        return {(r, a, u) for r, a, u in inserted}

    def _count_users(self, conn: Any, upsert: Callable[..., Any], batch: Batch,
                     counters: defaultdict[Key, float], claim: Mapping[str, Any] | None,
                     known: Mapping[str, set[User]]) -> list[User]:
        """Insert the batch's users; count the new ones, and first conversions, at their first exposure's minute.

        A ``known`` user (its row is there) is sent only with a conversion. Returns the rows sent.
        """
        e = exposures_table.c
        unique: dict[tuple[str, str, str], tuple[int, int | None]] = {}
        for (r, a, u), (first, _last, conv) in batch.exposures.items():
            key = (r, a, u[:200])
            earlier = unique.get(key)
            if earlier is not None:  # two ids the column cuts to one: the earliest exposure, any conversion
                first, conv = min(first, earlier[0]), conv if conv is not None else earlier[1]
            elif conv is None and key in known.get(r, ()):
                continue
            unique[key] = (first, conv)
        seen = [(key, first, conv) for key, (first, conv) in sorted(unique.items())]
        new = self._insert_users(conn, upsert, seen, claim)
        converting: defaultdict[tuple[str, str], dict[str, int]] = defaultdict(dict)
        for (r, a, u), first, conv in seen:
            if (r, a, u) in new:
                counters[(r, a, minute_of(first), NEW_USERS, "")] += 1
                if conv is not None:
                    counters[(r, a, minute_of(first), NEW_CONVERTERS, "")] += 1
            elif conv is not None:
                converting[(r, a)][u] = conv
        for (r, a), users in sorted(converting.items()):
            names = sorted(users)
            for i in range(0, len(names), 500):
                chunk = names[i:i + 500]
                first_conversions = conn.execute(
                    update(exposures_table)
                    .where(e.rollout == r, e.arm == a, e.user_key.in_(chunk), e.converted_at.is_(None))
                    .values(converted_at=max(users[u] for u in chunk))
                    .returning(e.first_seen)
                ).scalars().all()
                for first in first_conversions:
                    counters[(r, a, minute_of(first), NEW_CONVERTERS, "")] += 1
        return [key for key, _first, _conv in seen]

    def restart_users(self, rollout: str, changed_at: float) -> int:
        """The percentage changed: forget who was seen before, so users count anew from ``changed_at``."""
        self._ensure_tables()
        e = exposures_table.c
        with self._engine().begin() as conn:
            self._bump_resets(conn, rollout)
            deleted = conn.execute(
                delete(exposures_table).where(e.rollout == rollout, e.first_seen < int(changed_at))
            ).rowcount
        return int(deleted or 0)

    def compact(self, now: float | None = None) -> int:
        """Fold the shards of closed minutes into shard 0 and the hourly rows; returns rows folded.

        One transaction: the shard rows are deleted and returned, then added to their
        targets, so a row is folded exactly once even if two processes compact at once
        (on PostgreSQL only one does; the other skips). On PostgreSQL rows a concurrent
        flush has locked are left for the next compaction, so the two never wait on
        each other in a cycle.
        """
        self._ensure_tables()
        engine = self._engine()
        upsert = _dialect_insert(engine.dialect.name)
        cut = minute_of(time.time() if now is None else now)
        c = counters_table.c
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql" and not conn.execute(
                select(func.pg_try_advisory_xact_lock(_COMPACTION_LOCK))
            ).scalar():
                return 0
            closed = and_(c.shard > 0, c.minute < cut)
            if engine.dialect.name == "postgresql":  # rows a flush holds are folded next time: never wait on one
                key = (c.rollout, c.minute, c.arm, c.metric, c.key, c.shard)
                closed = tuple_(*key).in_(select(*key).where(closed).with_for_update(skip_locked=True))
            moved = conn.execute(
                delete(counters_table).where(closed)
                .returning(c.rollout, c.minute, c.arm, c.metric, c.key, c.value)
            ).all()
            if not moved:
                return 0
            minutes: defaultdict[tuple[str, int, str, str, str], float] = defaultdict(float)
            hours: defaultdict[tuple[str, int, str, str, str], float] = defaultdict(float)
            for r, m, a, metric, k, v in moved:
                minutes[(r, m, a, metric, k)] += v
                hours[(r, m - m % HOUR, a, metric, k)] += v
            conn.execute(_adding_to_counters(upsert), [
                {"rollout": r, "minute": m, "arm": a, "metric": metric, "key": k, "shard": 0, "value": v}
                for (r, m, a, metric, k), v in sorted(minutes.items())
            ])
            h = upsert(hour_counters_table)
            h = h.on_conflict_do_update(
                index_elements=["rollout", "hour", "arm", "metric", "key"],
                set_={"value": hour_counters_table.c.value + h.excluded.value},
            )
            conn.execute(h, [
                {"rollout": r, "hour": hr, "arm": a, "metric": metric, "key": k, "value": v}
                for (r, hr, a, metric, k), v in sorted(hours.items())
            ])
        return len(moved)

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
        """Delete metric rows older than the retention, batch ids older than a few hours; returns rows deleted.

        Exposure rows go by whole days (the first prune after midnight UTC deletes a day of them), so the
        processes' memories of written rows are voided about once a day, not at every process's prune.
        """
        self._ensure_tables()
        now = time.time() if now is None else now
        cutoff = int(now - retention_days * 86400)
        deleted = 0
        engine = self._engine()
        with engine.begin() as conn:
            for stmt in (
                delete(counters_table).where(counters_table.c.minute < cutoff),
                delete(hour_counters_table).where(hour_counters_table.c.hour < cutoff - cutoff % HOUR),
                delete(flushes_table).where(flushes_table.c.flushed_at < int(time.time() - FLUSH_IDS_KEPT_S)),
                delete(probes_table).where(probes_table.c.minute < cutoff),
            ):
                deleted += conn.execute(stmt).rowcount or 0
        return deleted + self._prune_exposures(engine, cutoff - cutoff % DAY)

    def _prune_exposures(self, engine: Engine, day: int) -> int:
        """Delete exposure rows last seen before ``day``, :data:`PRUNE_CHUNK` a transaction, each bumping the
        prune's count (nothing is bumped when no row is that old)."""
        e = exposures_table.c
        oldest = (select(e.rollout, e.arm, e.user_key).where(e.last_seen < day)
                  .order_by(e.last_seen).limit(PRUNE_CHUNK))
        deleted = 0
        while True:
            with engine.connect() as conn:
                if conn.execute(select(e.last_seen).where(e.last_seen < day).limit(1)).first() is None:
                    return deleted
            with engine.begin() as conn:
                self._bump_resets(conn, _PRUNED)
                chunk = conn.execute(delete(exposures_table).where(
                    tuple_(e.rollout, e.arm, e.user_key).in_(oldest))).rowcount or 0
            deleted += chunk
            if chunk < PRUNE_CHUNK:
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
        merged: defaultdict[str, defaultdict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
        db_errors = quarantined = 0.0
        with self._engine().connect() as conn:
            rows = conn.execute(_sums([rollout, GLOBAL], start, end + 60, exclude=SUBJECT)).all()
            c = _merged(start, end + 60, [rollout], only=SUBJECT).c
            total = func.sum(c.value)
            subjects = conn.execute(
                select(c.key, total).group_by(c.key).order_by(total.desc(), c.key).limit(10)
            ).all()
            probes = self._latest_probes(conn, now)
        for r, arm, metric, key, value in rows:
            if r == GLOBAL:
                if metric == DB_ERROR:
                    db_errors += value
                elif metric == QUARANTINED:
                    quarantined += value
            else:
                merged[arm][metric][key] = value
        minutes = max(window_s / 60.0, 1 / 60.0)
        arms = {
            arm: summarize_arm(merged.get(arm, {}), minutes, *_users(merged.get(arm, {})), bins=bins)
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
            "top_subjects": [(key, float(value)) for key, value in subjects],
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
                select(c.minute, c.arm, c.metric, c.key, func.sum(c.value))
                .where(c.rollout == rollout, c.minute >= start, c.minute <= minute_of(now), c.metric != SUBJECT)
                .group_by(c.minute, c.arm, c.metric, c.key)
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

    def users(self, rollout: str, *, since: float, now: float | None = None) -> dict[str, int]:
        """Users per arm first seen from the first whole minute after ``since`` (a sum of per-minute counters)."""
        return {"v1": 0, "v2": 0} | self.totals(rollout, NEW_USERS, since=since, now=now)

    def totals(self, rollout: str, metric: str, *, since: float, now: float | None = None) -> dict[str, int]:
        """One counter summed per arm (every arm, allow/deny-listed ones included) from the first whole minute
        after ``since``; read from the rollups like every window."""
        self._ensure_tables()
        now = time.time() if now is None else now
        start = minute_of(since) if since % 60 == 0 else minute_of(since) + 60
        counts: dict[str, int] = {}
        with self._engine().connect() as conn:
            for _r, arm, _metric, _key, value in conn.execute(
                _sums([rollout], start, minute_of(now) + 60, only=metric)
            ).all():
                counts[arm] = counts.get(arm, 0) + int(value)
        return counts

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


def _merged(start: int, stop: int, rollouts: list[str], *, only: str | None = None,
            exclude: str | None = None) -> Any:
    """Counter rows of [start, stop) as one subquery: whole hours from the hourly rows plus the
    shards not compacted yet, the partial first and last hours from the minute rows."""
    c, h = counters_table.c, hour_counters_table.c

    def minute_rows(lo: int, hi: int, *, pending: bool = False) -> Any:
        q = select(c.rollout, c.arm, c.metric, c.key, c.value).where(
            c.rollout.in_(rollouts), c.minute >= lo, c.minute < hi)
        q = q.where(c.shard > 0) if pending else q
        q = q.where(c.metric == only) if only is not None else q
        return q.where(c.metric != exclude) if exclude is not None else q

    first_hour, last_hour = start + (-start) % HOUR, stop - stop % HOUR
    if first_hour >= last_hour:
        return minute_rows(start, stop).subquery()
    hours = select(h.rollout, h.arm, h.metric, h.key, h.value).where(
        h.rollout.in_(rollouts), h.hour >= first_hour, h.hour < last_hour)
    hours = hours.where(h.metric == only) if only is not None else hours
    hours = hours.where(h.metric != exclude) if exclude is not None else hours
    return union_all(
        minute_rows(start, first_hour), hours, minute_rows(first_hour, last_hour, pending=True),
        minute_rows(last_hour, stop),
    ).subquery()


def _sums(rollouts: list[str], start: int, stop: int, *, only: str | None = None,
          exclude: str | None = None) -> Any:
    """Sum per (rollout, arm, metric, key) of every shard and process over [start, stop)."""
    u = _merged(start, stop, rollouts, only=only, exclude=exclude).c
    return select(u.rollout, u.arm, u.metric, u.key, func.sum(u.value)).group_by(u.rollout, u.arm, u.metric, u.key)


def _users(metrics: Mapping[str, Mapping[str, float]]) -> tuple[int, int]:
    """(new users, of them converted) of one arm's merged counters."""
    return int(sum(metrics.get(NEW_USERS, {}).values())), int(sum(metrics.get(NEW_CONVERTERS, {}).values()))


#: what a refused write can raise: SQLAlchemy's errors, and drivers' encoding errors it lets through
REFUSALS: tuple[type[BaseException], ...] = (SQLAlchemyError, UnicodeError, ValueError)


def _transient(exc: BaseException) -> bool:
    """A failure worth retrying later unchanged: the database is unreachable, locked, timed out or its file lost."""
    if isinstance(exc, (StoreFileError, MissingTablesError)):  # the file may come back, the migration run: keep it
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (OperationalError, InterfaceError, DisconnectionError, SATimeoutError))


#: the batch id, inserted by the first statement of a flush (a data-modifying CTE always runs)
_CLAIM = "claimed AS (INSERT INTO v2rollout_flushes (batch_id, flushed_at) VALUES (:batch_id, :flushed_at))"
#: the shard is the lowest one whose advisory lock this transaction gets (generate_series stops at the
#: first, LIMIT 1): it holds only that one, released at commit; all taken: the process's own, and wait
_FREE = ("free AS MATERIALIZED (SELECT s FROM generate_series(1, :shards) AS s "
         "WHERE pg_try_advisory_xact_lock(CAST(:space AS integer), s) LIMIT 1)")
_ADD_COUNTERS = (
    "INSERT INTO v2rollout_minute_counters (rollout, minute, arm, metric, key, shard, value) "
    "SELECT r, m, a, mt, k, coalesce((SELECT s FROM free), :fallback), v "
    "FROM unnest(CAST(:r AS text[]), CAST(:m AS bigint[]), CAST(:a AS text[]), CAST(:mt AS text[]), "
    "CAST(:k AS text[]), CAST(:v AS float8[])) AS t(r, m, a, mt, k, v) "
    "ON CONFLICT (rollout, minute, arm, metric, key, shard) "
    "DO UPDATE SET value = v2rollout_minute_counters.value + excluded.value"
)
_INSERT_USERS = (
    "INSERT INTO v2rollout_exposures (rollout, arm, user_key, first_seen, last_seen, converted_at) "
    "SELECT r, a, u, f, f, c FROM unnest(CAST(:r AS text[]), CAST(:a AS text[]), CAST(:u AS text[]), "
    "CAST(:f AS bigint[]), CAST(:c AS bigint[])) AS t(r, a, u, f, c) "
    "ON CONFLICT (rollout, arm, user_key) DO NOTHING RETURNING rollout, arm, user_key"
)
#: PostgreSQL statements over arrays, [without, with] the batch id claimed in them
_PG_ADD_COUNTERS = (text(f"WITH {_FREE} {_ADD_COUNTERS}"), text(f"WITH {_CLAIM}, {_FREE} {_ADD_COUNTERS}"))
_PG_INSERT_USERS = (text(_INSERT_USERS), text(f"WITH {_CLAIM} {_INSERT_USERS}"))
#: a flush's shared locks of the reset counts of its rollouts (sorted), held until it commits
_PG_SHARE_RESETS = text(
    "SELECT count(pg_advisory_xact_lock_shared(:space, hashtext(name))) "
    "FROM unnest(CAST(:names AS text[])) AS n(name)"
)


def _adding_to_counters(upsert: Callable[..., Any]) -> Any:
    """``INSERT … ON CONFLICT DO UPDATE SET value = value + excluded.value`` into the minute rows."""
    stmt = upsert(counters_table)
    return stmt.on_conflict_do_update(
        index_elements=["rollout", "minute", "arm", "metric", "key", "shard"],
        set_={"value": counters_table.c.value + stmt.excluded.value},
    )


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
        self._last_prune = self._last_compaction = float("-inf")

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
        """One round: count hung calls, flush, probes, compaction, prune (hourly), hooks (unless told not to).

        False when SQL failed.
        """
        self._before_flush()
        if not self.store.flush():
            return False
        try:
            self.store.record_probes(self._probes(), now=self.clock())
            if time.monotonic() - self._last_compaction >= COMPACT_EVERY_S:
                self.store.compact(now=self.clock())
                self._last_compaction = time.monotonic()
            if time.monotonic() - self._last_prune >= 3600:
                self.store.prune(self.retention_days, now=self.clock())
                self._last_prune = time.monotonic()
            if hooks:
                self._after_flush()
        except SQLAlchemyError as exc:
            self.store.failed(exc)
            return False
        return True
