"""Mergeable per-minute metric buckets (pure, no Flask).

Everything is an additive counter keyed by (rollout, arm, minute, metric, key),
so buckets from any number of processes merge by addition — in memory here, in
SQL by the flusher. ``arm`` is the version the user was *assigned* (a v2 call
that fell back stays in the v2 arm, as the runbook counts it). Latencies go into
fixed log-scale bins (growth 3 %: a bin's geometric midpoint is within 1.5 % of
any value in it), so merged percentiles are as exact as one process's.
"""
from __future__ import annotations

import math
import threading
import time
from collections import Counter, defaultdict
from typing import Callable, Iterable, Mapping

from .dispatch import Outcome

# metric names
CALCULATIONS = "calculations"
DURATION_SUM = "duration_ms_sum"
LATENCY = "latency"
FALLBACK = "fallback"
ERROR = "error"
UNHANDLED = "unhandled"
SLOW = "slow"
SHADOW = "shadow"
SHADOW_LATENCY = "shadow_latency"
SHADOW_DIFF_SUM = "shadow_diff_sum"
SHADOW_DIFF_N = "shadow_diff_n"
SHADOW_DROP = "shadow_drop"
SHADOW_TIMEOUT = "shadow_timeout"
CONVERSION = "conversion"
SUBJECT = "subject"

GROWTH = 1.03
MIN_MS = 0.001
_LOG_GROWTH = math.log(GROWTH)
#: distinct subjects kept per rollout and minute; the rest count under OTHER
SUBJECTS_PER_MINUTE = 200
OTHER = "__other__"

Key = tuple[str, str, int, str, str]


def latency_bin(ms: float) -> int:
    """Index of the log-scale bin holding ``ms`` (0 for anything ≤ MIN_MS)."""
    if ms <= MIN_MS:
        return 0
    return int(math.log(ms / MIN_MS) / _LOG_GROWTH) + 1


def bin_value(index: int) -> float:
    """Representative value of a bin: its geometric midpoint."""
    if index <= 0:
        return MIN_MS
    return MIN_MS * GROWTH ** (index - 0.5)


def percentile(bins: Mapping[int, float], q: float) -> float | None:
    """Nearest-rank ``q``-quantile (0–1) of a binned distribution."""
    total = sum(bins.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0.0
    for index in sorted(bins):
        seen += bins[index]
        if seen >= rank:
            return bin_value(index)
    return bin_value(max(bins))


def minute_of(ts: float) -> int:
    return int(ts // 60) * 60


class Recorder:
    """Per-process counters waiting to be flushed, plus lifetime totals of this process."""

    def __init__(self, clock: Callable[[], float] = time.time, slow_ms: float = 500.0) -> None:
        self.clock = clock
        self.slow_ms = slow_ms
        self._lock = threading.Lock()
        self._pending: defaultdict[Key, float] = defaultdict(float)
        self._exposures: set[tuple[str, str, str]] = set()
        self._subjects: defaultdict[tuple[str, int], Counter[str]] = defaultdict(Counter)
        self.totals: Counter[tuple[str, str, str, str]] = Counter()

    def _add(self, items: Iterable[tuple[str, str, str, str, float]]) -> None:
        minute = minute_of(self.clock())
        with self._lock:
            pending, totals = self._pending, self.totals
            for rollout, arm, metric, key, amount in items:
                pending[(rollout, arm, minute, metric, key)] += amount
                totals[(rollout, arm, metric, key)] += amount

    def calculation(self, outcome: Outcome, *, subject: str | None = None, unhandled: str | None = None) -> None:
        """Count one ``calculate()`` call exactly once, whatever it ended in."""
        r, arm, ms = outcome.rollout, outcome.assigned, outcome.duration_ms
        items = [
            (r, arm, CALCULATIONS, "", 1.0),
            (r, arm, DURATION_SUM, "", ms),
            (r, arm, LATENCY, str(latency_bin(ms)), 1.0),
        ]
        if outcome.fallback_reason is not None:
            items.append((r, arm, FALLBACK, outcome.fallback_reason, 1.0))
        if outcome.error_type is not None:
            items.append((r, arm, ERROR, outcome.error_type, 1.0))
        if unhandled is not None:
            items.append((r, arm, UNHANDLED, unhandled, 1.0))
        if ms > self.slow_ms:
            items.append((r, arm, SLOW, "", 1.0))
        self._add(items)
        if outcome.user_id is not None:
            with self._lock:
                self._exposures.add((r, arm, outcome.user_id))
        if subject is not None:
            self._subject(r, subject)

    def _subject(self, rollout: str, subject: str) -> None:
        minute = minute_of(self.clock())
        with self._lock:
            counts = self._subjects[(rollout, minute)]
            if subject in counts or len(counts) < SUBJECTS_PER_MINUTE:
                counts[subject] += 1
            else:
                counts[OTHER] += 1

    def shadow(self, rollout: str, arm: str, agreement: str, *, difference: float | None, duration_ms: float) -> None:
        """One completed shadow comparison; ``arm`` is the version that ran off the path."""
        items = [
            (rollout, arm, SHADOW, agreement, 1.0),
            (rollout, arm, SHADOW_LATENCY, str(latency_bin(duration_ms)), 1.0),
        ]
        if difference is not None:
            items += [(rollout, arm, SHADOW_DIFF_SUM, "", difference), (rollout, arm, SHADOW_DIFF_N, "", 1.0)]
        self._add(items)

    def shadow_drop(self, rollout: str, arm: str, reason: str) -> None:
        self._add([(rollout, arm, SHADOW_DROP, reason, 1.0)])

    def shadow_timeout(self, rollout: str, arm: str) -> None:
        self._add([(rollout, arm, SHADOW_TIMEOUT, "", 1.0)])

    def conversion(self, rollout: str, arm: str, user_id: str | None) -> None:
        self._add([(rollout, arm, CONVERSION, "", 1.0)])

    def local(self, rollout: str) -> dict[str, dict[str, dict[str, float]]]:
        """This process's lifetime totals for ``rollout``: ``{arm: {metric: {key: value}}}``."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        with self._lock:
            for (r, arm, metric, key), value in self.totals.items():
                if r == rollout:
                    out.setdefault(arm, {}).setdefault(metric, {})[key] = value
        return out
