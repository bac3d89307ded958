"""Replay: the current v1 and v2 re-run offline on recorded inputs (pure, no Flask).

The runbook's "fix available → resume" needs evidence that the fixed v2 agrees
and falls back no more than before, on the traffic that made it fail. The inputs
come from the opt-in record (``record_inputs=True``); this module only runs both
versions through :func:`dispatch.run` and counts.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from .compare import AGREEING, FALLBACK, INCOMPARABLE, V2_ERROR, compare_values
from .dispatch import run
from .registry import Rollout


def decode_inputs(raw: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A recorded ``{"args": [...], "kwargs": {...}}`` → the call's arguments; ``ValueError`` if malformed."""
    data = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(data, dict) or not isinstance(data.get("args", []), list) \
            or not isinstance(data.get("kwargs", {}), dict):
        raise ValueError("recorded inputs must be an object with a list 'args' and an object 'kwargs'")
    return tuple(data.get("args", [])), dict(data.get("kwargs", {}))


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 2) if whole else None


def replay(rollout: Rollout, inputs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Run v2 (with its fallback to v1) and v1 on every recorded call; agreement, fallback and error figures."""
    agreement: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    v1_errors: Counter[str] = Counter()
    differences: list[float] = []
    total = fallbacks = 0
    calls = [decode_inputs(record["inputs"]) for record in inputs]  # a malformed record: nothing runs
    for args, kwargs in calls:
        total += 1
        v2 = run(rollout.name, rollout.v1, rollout.v2, "v2", True, args, kwargs, None)
        v1 = v2 if v2.version == "v1" else run(rollout.name, rollout.v1, rollout.v2, "v1", True, args, kwargs, None)
        if v1.raised is not None:
            v1_errors[type(v1.raised).__name__] += 1
            continue
        if v2.error_type is not None:
            errors[v2.error_type] += 1
            agreement[V2_ERROR] += 1
        elif v2.fell_back:
            fallbacks += 1
            reasons[str(v2.fallback_reason).split(":", 1)[0]] += 1
            agreement[FALLBACK] += 1
        else:
            comparison = compare_values(v1.value, v2.value, extract=rollout.extract, comparator=rollout.compare)
            agreement[comparison.agreement] += 1
            if comparison.difference is not None:
                differences.append(comparison.difference)
    compared = sum(n for cls, n in agreement.items() if cls not in (FALLBACK, V2_ERROR, INCOMPARABLE))
    return {
        "rollout": rollout.name, "inputs": total,
        "agreement": dict(sorted(agreement.items())),
        "agreement_rate_pct": _pct(sum(n for cls, n in agreement.items() if cls in AGREEING), compared),
        "abs_difference_avg": round(sum(differences) / len(differences), 4) if differences else None,
        "fallbacks": fallbacks, "fallback_rate_pct": _pct(fallbacks, total - sum(v1_errors.values())),
        "fallback_reasons": dict(reasons.most_common()),
        "v2_errors": sum(errors.values()), "v2_error_rate_pct": _pct(sum(errors.values()), total),
        "v2_errors_by_type": dict(errors.most_common()),
        "v1_errors": dict(v1_errors.most_common()),
    }
