"""JSONL records of calculations, errors and fallbacks (the runbook's log).

One JSON object a line, size-rotated by :class:`logging.handlers.RotatingFileHandler`.
Rotation is per process: under several workers give each its own file (for
example ``logs/v2_calculations.{pid}.jsonl``) or rotate externally.
"""
from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from typing import Any

from .compare import Comparison
from .dispatch import Outcome


def _ts() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _round(value: Any) -> Any:
    return round(value, 2) if isinstance(value, float) else value


class JsonlLog:
    """Appends runbook-shaped records to one file."""

    def __init__(self, path: str, *, max_bytes: int, backups: int, slow_ms: float) -> None:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self.path = path
        self.slow_ms = slow_ms
        self._logger = logging.Logger(f"flask_v2rollout.jsonl.{path}")
        self._logger.propagate = False
        handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        self._logger.addHandler(handler)

    def write(self, record: dict[str, Any]) -> None:
        self._logger.info(json.dumps(record, default=str, separators=(",", ":")))

    def calculation(self, outcome: Outcome, *, subject: str | None, number: float | None,
                    metadata: dict[str, Any] | None) -> None:
        meta = dict(metadata or {})
        meta["fallback_to_v1"] = outcome.fell_back
        meta["fallback_reason"] = outcome.fallback_reason
        base = {
            "timestamp": _ts(),
            "rollout": outcome.rollout,
            "subject": subject,
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
        self.write({**base, "event": "calculation", "level": "INFO", "value": _round(number), "metadata": meta})
        if outcome.fell_back:
            self.write({**base, "event": "fallback", "level": "INFO", "fallback_reason": outcome.fallback_reason})
        if outcome.duration_ms > self.slow_ms:
            self.write({**base, "event": "slow_calculation", "level": "WARNING", "threshold_ms": self.slow_ms})

    def shadow(
        self, rollout: str, *, subject: str | None, user_id: str | None, comparison: Comparison,
        shadow_version: str, duration_ms: float, v2_metadata: dict[str, Any] | None,
    ) -> None:
        """The runbook's shadow-comparison record."""
        self.write({
            "timestamp": _ts(), "event": "shadow_comparison", "level": "INFO", "rollout": rollout,
            "subject": subject, "mode": "shadow", "shadow_version": shadow_version, "user_id": user_id,
            "v1_value": _round(comparison.v1_number), "v2_value": _round(comparison.v2_number),
            "difference": _round(comparison.difference), "difference_pct": _round(comparison.difference_pct),
            "agreement": comparison.agreement, "elapsed_ms": round(duration_ms, 2), "v2_metadata": v2_metadata,
        })

    def close(self) -> None:
        for handler in list(self._logger.handlers):
            handler.close()
            self._logger.removeHandler(handler)
