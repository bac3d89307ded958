"""JSONL records of calculations, errors, fallbacks and shadow comparisons (the runbook's log).

One JSON object a line. The file is rotated by time (every ``rotate_s``, and early
at ``max_bytes``) into ``<file>.<UTC start>-<UTC end>``; a rotated file whose end is
older than ``retention_s`` is deleted, so the log keeps at least that much history
whatever the traffic (size it with docs/operations.md). Rotation is per process:
under several workers give each its own file (``{pid}`` in the file name is
replaced by the process id).

A rollout may rename its records' ``subject`` and ``value`` fields (``log_fields``),
so a host's existing recipes keep working: ``{"subject": "player", "value": "score"}``
writes ``player`` and ``score``, and the shadow record's ``v1_score`` / ``v2_score``.
"""
from __future__ import annotations

import glob
import json
import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import IO, Any

from .compare import Comparison
from .dispatch import Outcome

#: record fields a rollout may rename
RENAMABLE = frozenset({"subject", "value"})
_STAMP = "%Y%m%dT%H%M%SZ"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _stamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime(_STAMP)


def _round(value: Any) -> Any:
    return round(value, 2) if isinstance(value, float) else value


def validate_log_fields(fields: Mapping[str, str] | None) -> dict[str, str]:
    """``{"subject": "…", "value": "…"}`` checked: known keys, distinct plain names; ``ValueError`` otherwise."""
    if not fields:
        return {}
    if not isinstance(fields, Mapping) or set(fields) - RENAMABLE:
        raise ValueError(f"log_fields may rename only {sorted(RENAMABLE)}")
    names = list(fields.values())
    if not all(isinstance(n, str) and n.isidentifier() and len(n) <= 60 for n in names) or len(set(names)) < len(names):
        raise ValueError("log_fields values must be distinct identifiers of at most 60 characters")
    return dict(fields)


class _TimedFile:
    """Append-only lines, rotated by the clock; rotated files older than the retention are deleted."""

    def __init__(self, path: str, *, rotate_s: float, retention_s: float, max_bytes: int,
                 clock: Callable[[], float]) -> None:
        self.path = path
        self._rotate_s = rotate_s
        self._retention_s = retention_s
        self._max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._started = 0.0
        self._size = 0

    def write(self, line: str) -> None:
        with self._lock:
            now = self._clock()
            if self._file is None:
                self._open(now)
            elif now - self._started >= self._rotate_s or self._size + len(line) >= self._max_bytes:
                self._rotate(now)
            assert self._file is not None
            self._file.write(line + "\n")
            self._file.flush()
            self._size += len(line) + 1

    def _open(self, now: float) -> None:
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open between writes
        self._size = self._file.tell()
        self._started = now

    def _rotate(self, now: float) -> None:
        assert self._file is not None
        self._file.close()
        target = f"{self.path}.{_stamp(self._started)}-{_stamp(now)}"
        n = 1
        while os.path.exists(target):
            target = f"{self.path}.{_stamp(self._started)}-{_stamp(now)}.{n}"
            n += 1
        os.replace(self.path, target)
        self._prune(now)
        self._open(now)

    def _prune(self, now: float) -> None:
        for rotated in glob.glob(glob.escape(self.path) + ".*-*"):
            end = rotated[len(self.path) + 1:].split("-", 1)[1].split(".", 1)[0]
            try:
                ended = datetime.strptime(end, _STAMP).replace(tzinfo=UTC).timestamp()
            except ValueError:
                continue
            if ended < now - self._retention_s:
                try:
                    os.remove(rotated)
                except FileNotFoundError:
                    pass

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class JsonlLog:
    """Appends runbook-shaped records to one file."""

    def __init__(self, path: str, *, rotate_s: float, retention_s: float, max_bytes: int, slow_ms: float,
                 clock: Callable[[], float], fields: Callable[[str], Mapping[str, str]] = lambda _r: {}) -> None:
        path = path.replace("{pid}", str(os.getpid()))
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self.path = path
        self.slow_ms = slow_ms
        self._clock = clock
        self._fields = fields
        self._file = _TimedFile(path, rotate_s=rotate_s, retention_s=retention_s, max_bytes=max_bytes, clock=clock)

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, default=str, separators=(",", ":")))

    def _ts(self) -> str:
        return _iso(self._clock())

    def calculation(self, outcome: Outcome, *, subject: str | None, number: float | None,
                    metadata: dict[str, Any] | None, request_id: str | None = None) -> None:
        names = self._fields(outcome.rollout)
        subject_key, value_key = names.get("subject", "subject"), names.get("value", "value")
        meta = dict(metadata or {})
        meta["fallback_to_v1"] = outcome.fell_back
        meta["fallback_reason"] = outcome.fallback_reason
        base = {
            "timestamp": self._ts(),
            "rollout": outcome.rollout,
            "request_id": request_id,
            subject_key: subject,
            "calculator_version": outcome.version,
            "assigned_version": outcome.assigned,
            "elapsed_ms": round(outcome.duration_ms, 2),
            "user_id": outcome.user_id,
        }
        if outcome.error_type is not None:
            self.write({
                **base, "event": "error", "level": "ERROR", "calculator_version": "v2",
                "error_type": outcome.error_type, "error_message": str(outcome.error),
            })
        self.write({**base, "event": "calculation", "level": "INFO", value_key: _round(number), "metadata": meta})
        if outcome.fell_back:
            self.write({**base, "event": "fallback", "level": "INFO", "fallback_reason": outcome.fallback_reason})
        if outcome.duration_ms > self.slow_ms:
            self.write({**base, "event": "slow_calculation", "level": "WARNING", "threshold_ms": self.slow_ms})

    def shadow(
        self, rollout: str, *, subject: str | None, user_id: str | None, comparison: Comparison,
        shadow_version: str, duration_ms: float, v2_metadata: dict[str, Any] | None, request_id: str | None = None,
    ) -> None:
        """The runbook's shadow-comparison record; ``calculator_version`` is ``v2_shadow`` (``v1_shadow``)."""
        names = self._fields(rollout)
        subject_key, value_key = names.get("subject", "subject"), names.get("value", "value")
        shadow_number = comparison.v2_number if shadow_version == "v2" else comparison.v1_number
        self.write({
            "timestamp": self._ts(), "event": "shadow_comparison", "level": "INFO", "rollout": rollout,
            "request_id": request_id, subject_key: subject, "mode": "shadow",
            "calculator_version": f"{shadow_version}_shadow", "shadow_version": shadow_version, "user_id": user_id,
            value_key: _round(shadow_number),
            f"v1_{value_key}": _round(comparison.v1_number), f"v2_{value_key}": _round(comparison.v2_number),
            "difference": _round(comparison.difference), "difference_pct": _round(comparison.difference_pct),
            "agreement": comparison.agreement, "elapsed_ms": round(duration_ms, 2), "v2_metadata": v2_metadata,
        })

    def close(self) -> None:
        self._file.close()
