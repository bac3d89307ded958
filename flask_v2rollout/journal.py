"""The bounded SQL record of shadow comparisons and of opted-in calculator inputs.

The log file is for people with ``jq``; this record is what ``flask v2rollout compare``
and ``replay`` read, merged over every process. Rows are queued in memory and
written by a background thread (never on the request path, never in the shadow
worker's time budget), in batches; the table keeps at most ``retention_s`` of
history and ``max_rows`` rows per rollout. A full queue or a failing database
drops rows, counted in ``dropped`` and logged once per interval: this is a
diagnostic record, not a counter.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from sqlalchemy import Engine, Table, and_, delete, insert, select

from .compare import AGREEING
from .failures import FailureLog
from .models import recorded_inputs_table, shadow_comparisons_table

log = logging.getLogger("flask_v2rollout")

COMPARISONS, INPUTS = "comparisons", "inputs"
_TABLES: dict[str, Table] = {COMPARISONS: shadow_comparisons_table, INPUTS: recorded_inputs_table}
#: rows written in one transaction
BATCH = 500
#: seconds between two prunes (by age and by rows per rollout) of one process
PRUNE_EVERY_S = 60.0


def _label(value: str | None) -> str | None:
    return None if value is None else value[:200]


@dataclass(frozen=True)
class Limits:
    """How much the record keeps: per kind and rollout, and overall in time."""

    retention_s: float
    max_comparisons: int
    max_inputs: int
    queue_size: int


class Journal:
    """Queues rows and writes them from one daemon thread per process."""

    def __init__(self, engine: Callable[[], Engine], *, ensure_tables: Callable[[], None], clock: Callable[[], float],
                 limits: Limits, flush_s: float, error_log_interval: float) -> None:
        self._engine = engine
        self._ensure_tables = ensure_tables
        self._clock = clock
        self.limits = limits
        self._flush_s = flush_s
        self._queue: deque[tuple[str, dict[str, Any]]] = deque()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._failures = FailureLog(log, "shadow comparison / input record failed", interval_s=error_log_interval)
        self._pruned_at = float("-inf")
        self.dropped = 0

    def after_fork(self) -> None:
        """In a forked child: the parent's queue and locks are not this process's (a lock may be held)."""
        self._queue = deque()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None
        self._pid = os.getpid()

    # -- writing -------------------------------------------------------------------------------------------
    def comparison(self, rollout: str, *, subject: str | None, request_id: str | None, shadow_version: str,
                   v1: float | None, v2: float | None, difference: float | None, agreement: str) -> None:
        self._put(COMPARISONS, {"rollout": rollout, "at": self._clock(), "subject": _label(subject),
                                "request_id": request_id, "shadow_version": shadow_version, "v1_value": v1,
                                "v2_value": v2, "difference": difference, "agreement": agreement[:100]})

    def inputs(self, rollout: str, *, subject: str | None, request_id: str | None, inputs: str) -> None:
        self._put(INPUTS, {"rollout": rollout, "at": self._clock(), "subject": _label(subject),
                           "request_id": request_id, "inputs": inputs})

    def _put(self, kind: str, row: dict[str, Any]) -> None:
        with self._lock:
            if len(self._queue) >= self.limits.queue_size:
                self.dropped += 1
                return
            self._queue.append((kind, row))
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._loop, name="v2rollout-journal", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._flush_s)
            self._wake.clear()
            self.flush()

    def flush(self, *, prune: bool = False) -> int:
        """Write what is queued (pruning once a minute, or now with ``prune``); returns the rows written."""
        written = 0
        with self._write_lock:
            while True:
                with self._lock:
                    batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                if not batch:
                    break
                try:
                    self._write(batch, prune=prune)
                except Exception as exc:  # the database is down: this batch is lost, and counted
                    self.dropped += len(batch)
                    self._failures.record(exc, f"{len(batch)} row(s) dropped")
                    break
                written += len(batch)
        return written

    def _write(self, batch: list[tuple[str, dict[str, Any]]], *, prune: bool) -> None:
        self._ensure_tables()
        now = self._clock()
        touched: set[tuple[str, str]] = set()
        with self._engine().begin() as conn:
            for kind, table in _TABLES.items():
                rows = [row for k, row in batch if k == kind]
                if rows:
                    conn.execute(insert(table), rows)
                    touched.update((kind, row["rollout"]) for row in rows)
            # pruning reads up to a cap of rows: once a minute per process, not with every batch
            if not prune and time.monotonic() - self._pruned_at < PRUNE_EVERY_S:
                return
            self._pruned_at = time.monotonic()
            for kind, rollout in touched:
                table = _TABLES[kind]
                cap = self.limits.max_comparisons if kind == COMPARISONS else self.limits.max_inputs
                conn.execute(delete(table).where(table.c.at < now - self.limits.retention_s))
                floor = conn.execute(
                    select(table.c.id).where(table.c.rollout == rollout).order_by(table.c.id.desc())
                    .offset(cap).limit(1)).scalar()
                if floor is not None:
                    conn.execute(delete(table).where(and_(table.c.rollout == rollout, table.c.id <= floor)))

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def last_error(self) -> str | None:
        return self._failures.last_error

    def shutdown(self) -> None:
        self.flush()

    # -- reading -------------------------------------------------------------------------------------------
    def comparisons(self, rollout: str, *, since: float) -> list[dict[str, Any]]:
        return self._read(shadow_comparisons_table, rollout, since, self.limits.max_comparisons)

    def recorded_inputs(self, rollout: str, *, since: float) -> list[dict[str, Any]]:
        return self._read(recorded_inputs_table, rollout, since, self.limits.max_inputs)

    def _read(self, table: Table, rollout: str, since: float, cap: int) -> list[dict[str, Any]]:
        """Oldest first, within the bounds even before the next prune: the newest ``cap``, none past retention."""
        self._ensure_tables()
        since = max(since, self._clock() - self.limits.retention_s)
        with self._engine().connect() as conn:
            rows = conn.execute(select(table).where(and_(table.c.rollout == rollout, table.c.at >= since))
                                .order_by(table.c.id.desc()).limit(cap)).mappings().all()
        return [{k: v for k, v in row.items() if k != "id"} for row in reversed(rows)]


class SubjectSummary(TypedDict):
    subject: str | None
    comparisons: int
    v1_avg: float | None
    v2_avg: float | None
    difference_avg: float | None
    abs_difference_avg: float | None
    agreement: dict[str, int]
    agreement_rate_pct: float | None


def _avg(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def _rate(agreement: Mapping[str, int]) -> float | None:
    compared = sum(n for cls, n in agreement.items() if cls not in ("fallback", "v2_error", "incomparable"))
    agreeing = sum(n for cls, n in agreement.items() if cls in AGREEING)
    return round(100.0 * agreeing / compared, 2) if compared else None


def _summary(subject: str | None, rows: list[Mapping[str, Any]]) -> SubjectSummary:
    paired = [r for r in rows if r["v1_value"] is not None and r["v2_value"] is not None]
    agreement: dict[str, int] = {}
    for r in rows:
        agreement[r["agreement"]] = agreement.get(r["agreement"], 0) + 1
    return {
        "subject": subject, "comparisons": len(rows),
        "v1_avg": _avg([r["v1_value"] for r in rows if r["v1_value"] is not None]),
        "v2_avg": _avg([r["v2_value"] for r in rows if r["v2_value"] is not None]),
        "difference_avg": _avg([r["v2_value"] - r["v1_value"] for r in paired]),
        "abs_difference_avg": _avg([abs(r["v2_value"] - r["v1_value"]) for r in paired]),
        "agreement": dict(sorted(agreement.items())), "agreement_rate_pct": _rate(agreement),
    }


def summarize(rows: Iterable[Mapping[str, Any]], *, outlier: float) -> dict[str, Any]:
    """Per subject and overall: v1 and v2 averages, signed and absolute differences, agreement; outliers."""
    rows = list(rows)
    by_subject: dict[str | None, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_subject.setdefault(r["subject"], []).append(r)
    subjects = sorted((_summary(s, rs) for s, rs in by_subject.items()),
                      key=lambda s: (-s["comparisons"], str(s["subject"])))
    outliers = [
        {"subject": r["subject"], "at": r["at"], "request_id": r["request_id"], "v1_value": r["v1_value"],
         "v2_value": r["v2_value"], "difference": round(r["v2_value"] - r["v1_value"], 4)}
        for r in rows
        if r["v1_value"] is not None and r["v2_value"] is not None and abs(r["v2_value"] - r["v1_value"]) > outlier
    ]
    outliers.sort(key=lambda o: -abs(o["difference"]))
    return {"overall": _summary(None, rows), "outlier_threshold": outlier, "outliers": outliers,
            "subjects": subjects}
