"""Mergeable per-minute metric buckets (pure, no Flask).

Everything is an additive counter keyed by (rollout, arm, minute, metric, key),
so buckets from any number of processes merge by addition — in memory here, in
SQL by the flusher. ``arm`` is the version the user was *assigned* (a v2 call
that fell back stays in the v2 arm, as the runbook counts it). Latencies go into
fixed log-scale bins from 0.1 µs (growth 3 %: a bin's geometric midpoint is within 1.5 % of
any value in it), so merged percentiles are as exact as one process's.
"""
from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from ..dispatch import Outcome

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
DB_ERROR = "db_error"
#: a sink of the request pipeline (or host code inside it) raised; key = the sink
SINK_ERROR = "sink_error"
#: a call still running after the slow threshold, counted by the in-flight sweep before it returned
HUNG = "hung"
#: a v2 result that came after its deadline and was discarded
LATE = "late"
#: responses of requests that calculated, by status class ("2xx", "5xx", …)
RESPONSE = "response"
#: counter rows SQL refused for good (app-wide; key = the reason)
QUARANTINED = "quarantined"
#: a host's business event (``track_event``) in the arm of its user; key = the event's name
EVENT = "event"
#: users first seen since the rollout's last percentage change, at the minute of that first exposure
#: (counted by the store at flush, from its exposure rows)
NEW_USERS = "new_users"
#: of those users, the ones who converted (counted once, at the minute of their first exposure)
NEW_CONVERTERS = "new_converters"
#: longest label stored in a counter key (the SQL column holds 200)
MAX_LABEL = 200
#: rollout/arm used for app-wide counters (database failures)
GLOBAL = "*"

GROWTH = 1.03
MIN_MS = 0.0001
_LOG_GROWTH = math.log(GROWTH)
#: distinct subjects a process writes per rollout and minute; the rest count under OTHER
SUBJECTS_PER_MINUTE = 200
OTHER = "__other__"

Key = tuple[str, str, int, str, str]
#: "0xx" … "9xx", so counting a response formats nothing
_STATUS_CLASSES = tuple(f"{n}xx" for n in range(10))


def latency_bin(ms: float) -> int:
    """Index of the log-scale bin holding ``ms`` (0 for anything ≤ MIN_MS)."""
    if ms <= MIN_MS:
        return 0
    return int(math.log(ms / MIN_MS) / _LOG_GROWTH) + 1


def bin_value(index: int) -> float:
    """Representative value of a bin: its geometric midpoint."""
    if index <= 0:
        return MIN_MS
    return float(MIN_MS * GROWTH ** (index - 0.5))


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


def reason_code(reason: str) -> str:
    """A fallback reason's code — the text before the first ``": "`` — so metric keys stay few.

    ``"insufficient_weeks: Josh Allen has 1 week"`` counts as ``insufficient_weeks``;
    ``"exception:KeyError"`` stays whole. The JSONL log and the Outcome keep the whole text.
    """
    return clean_label(reason.split(": ", 1)[0].strip()[:100]) or "fallback"


def clean_label(text: str) -> str:
    """A label safe for every SQL backend: no NUL, no lone surrogate, at most MAX_LABEL characters.

    Labels come from host code and user input (subjects, reasons, exception names); one
    unstorable label must not make a whole metrics batch fail.
    """
    if text.isascii():
        if "\x00" not in text and len(text) <= MAX_LABEL:
            return text
        return text.replace("\x00", "\ufffd")[:MAX_LABEL]
    cleaned = text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return cleaned[:MAX_LABEL]


def minute_of(ts: float) -> int:
    return int(ts // 60) * 60


@dataclass
class Batch:
    """Counters and exposures taken from a Recorder, flushed to SQL as one unit."""

    counters: dict[Key, float]
    #: (rollout, arm, user) -> (first_seen, last_seen, last conversion | None), epoch seconds
    exposures: dict[tuple[str, str, str], tuple[int, int, int | None]]

    def __bool__(self) -> bool:
        return bool(self.counters or self.exposures)


class TopSubjects:
    """One minute's most frequent subjects of one rollout in one process (space-saving).

    At most ``capacity`` subjects are tracked; a new one replaces the least counted and
    inherits its count as possible error, so any subject seen more than
    ``total / capacity`` times is kept. :meth:`deltas` hands over what to add to SQL
    since the last call: each kept subject's guaranteed count (count − error), for at
    most ``capacity`` distinct subjects over the minute, and the rest under OTHER, so
    the counts written add up to the calls.
    """

    def __init__(self, capacity: int = SUBJECTS_PER_MINUTE) -> None:
        self.capacity = capacity
        self.total = 0
        self._counts: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._written: dict[str, int] = {}
        self._other_written = 0

    def add(self, subject: str) -> None:
        self.total += 1
        counts = self._counts
        if subject in counts:
            counts[subject] += 1
        elif len(counts) < self.capacity:
            counts[subject] = 1
            self._errors[subject] = 0
        else:
            evicted = min(counts, key=counts.__getitem__)
            floor = counts.pop(evicted)
            del self._errors[evicted]
            counts[subject] = floor + 1
            self._errors[subject] = floor

    def deltas(self) -> dict[str, float]:
        out: dict[str, float] = {}
        written = self._written
        for subject, count in self._counts.items():
            sure = count - self._errors[subject]
            before = written.get(subject)
            if before is None and len(written) >= self.capacity:
                continue
            if before is None or sure > before:
                out[subject] = float(sure - (before or 0))
                written[subject] = sure
        other = self.total - sum(written.values())
        if other != self._other_written:
            out[OTHER] = float(other - self._other_written)
            self._other_written = other
        return out


class _Calls:
    """The ``calculate()`` counters of one (rollout, arm, minute): plain adds on the request path.

    Every call adds to these; :meth:`Recorder.take` turns them into counter rows, so a flush
    handles the cells that were touched since the last one and nothing else.
    """

    __slots__ = ("calculations", "slow", "duration_ms", "latency", "responses")

    def __init__(self) -> None:
        self.calculations = 0
        self.slow = 0
        self.duration_ms = 0.0
        self.latency: dict[int, int] = {}
        #: status class ("2xx", …) -> responses of requests that calculated
        self.responses: dict[str, int] = {}

    def rows(self, rollout: str, arm: str, minute: int) -> Iterator[tuple[Key, float]]:
        if self.calculations:
            yield (rollout, arm, minute, CALCULATIONS, ""), float(self.calculations)
        if self.slow:
            yield (rollout, arm, minute, SLOW, ""), float(self.slow)
        if self.latency:
            yield (rollout, arm, minute, DURATION_SUM, ""), self.duration_ms
        for index, n in self.latency.items():
            yield (rollout, arm, minute, LATENCY, str(index)), float(n)
        for status, n in self.responses.items():
            yield (rollout, arm, minute, RESPONSE, status), float(n)


class Recorder:
    """Per-process counters waiting to be flushed, plus lifetime totals of this process.

    Counters are added once, to the pending minute buckets (a call's own counters to its
    :class:`_Calls` cell); ``take()`` folds what it hands over into ``totals``, so
    :meth:`local` is the sum of both.
    """

    def __init__(self, clock: Callable[[], float] = time.time, slow_ms: float = 500.0) -> None:
        self.clock = clock
        self.slow_ms = slow_ms
        self._lock = threading.Lock()
        self._pending: defaultdict[Key, float] = defaultdict(float)
        self._calls: dict[tuple[str, str, int], _Calls] = {}
        # (rollout, arm, user) -> [first_seen, last_seen, last conversion | None]
        self._exposures: dict[tuple[str, str, str], list[Any]] = {}
        self._subjects: dict[tuple[str, int], TopSubjects] = {}
        self.totals: defaultdict[tuple[str, str, str, str], float] = defaultdict(float)

    def reset(self) -> None:
        """Forget pending data (a forked child must not flush its parent's counts again)."""
        with self._lock:
            self._pending = defaultdict(float)
            self._calls = {}
            self._exposures = {}
            self._subjects = {}
            self.totals = defaultdict(float)

    def take(self) -> Batch:
        """Hand over everything pending as one batch and start afresh."""
        with self._lock:
            counters, calls, exposures = self._pending, self._calls, self._exposures
            self._pending = defaultdict(float)
            self._calls = {}
            self._exposures = {}
            totals = self.totals
            for (rollout, arm, minute), cell in calls.items():
                for row, value in cell.rows(rollout, arm, minute):
                    counters[row] += value
            for (rollout, arm, _minute, metric, key), value in counters.items():
                totals[(rollout, arm, metric, key)] += value
            # a minute's subjects stay summarised until it is over: later calls may change its top
            current = minute_of(self.clock())
            for (rollout, minute), top in list(self._subjects.items()):
                for subject, n in top.deltas().items():
                    counters[(rollout, GLOBAL, minute, SUBJECT, subject)] += n
                if minute < current:
                    del self._subjects[(rollout, minute)]
        return Batch(dict(counters), {k: tuple(v) for k, v in exposures.items()})

    def _expose_locked(self, key: tuple[str, str, str], now: int, converted: bool) -> None:
        entry = self._exposures.get(key)
        if entry is None:
            self._exposures[key] = [now, now, now if converted else None]
        else:
            entry[1] = now
            if converted:
                entry[2] = now

    def _add(self, items: Iterable[tuple[str, str, str, str, float]]) -> None:
        minute = minute_of(self.clock())
        with self._lock:
            pending = self._pending
            for rollout, arm, metric, key, amount in items:
                pending[(rollout, arm, minute, metric, key)] += amount

    def calculation(
        self, outcome: Outcome, *, subject: str | None = None, unhandled: str | None = None,
        counted: bool = False,
    ) -> None:
        """Count one ``calculate()`` call exactly once, whatever it ended in (one lock, one clock read).

        ``counted``: the in-flight sweep already counted this call (and its slowness) while it hung.
        """
        r, arm, ms = outcome.rollout, outcome.assigned, outcome.duration_ms
        index = int(math.log(ms / MIN_MS) / _LOG_GROWTH) + 1 if ms > MIN_MS else 0  # latency_bin(ms), inline
        items: list[tuple[str, str, float]] = []
        if outcome.fallback_reason is not None or outcome.error_type is not None or unhandled is not None:
            if outcome.fallback_reason is not None:
                items.append((FALLBACK, reason_code(outcome.fallback_reason), 1.0))
            if outcome.error_type is not None:
                items.append((ERROR, clean_label(outcome.error_type), 1.0))
            if unhandled is not None:
                items.append((UNHANDLED, clean_label(unhandled), 1.0))
        if subject is not None:
            subject = clean_label(subject)
        user = None if outcome.user_id is None else clean_label(outcome.user_id)
        now = self.clock()
        minute = int(now // 60) * 60  # minute_of(now), inline: this runs once per call
        with self._lock:
            cell = self._calls.get((r, arm, minute))
            if cell is None:
                cell = self._calls[(r, arm, minute)] = _Calls()
            # plain adds on the cell: nothing is allocated for a call already seen this minute
            if not counted:
                cell.calculations += 1
                if ms > self.slow_ms:
                    cell.slow += 1
            cell.duration_ms += ms
            latency = cell.latency
            latency[index] = latency.get(index, 0) + 1
            if items:
                pending = self._pending
                for metric, key, amount in items:
                    pending[(r, arm, minute, metric, key)] += amount
            if user is not None:
                self._expose_locked((r, arm, user), int(now), False)
            if subject is not None:
                top = self._subjects.get((r, minute))
                if top is None:
                    top = self._subjects[(r, minute)] = TopSubjects()
                top.add(subject)

    def shadow(self, rollout: str, arm: str, agreement: str, *, difference: float | None, duration_ms: float) -> None:
        """One completed shadow comparison; ``arm`` is the version that ran off the path."""
        items = [
            (rollout, arm, SHADOW, clean_label(agreement), 1.0),
            (rollout, arm, SHADOW_LATENCY, str(latency_bin(duration_ms)), 1.0),
        ]
        if difference is not None:
            items += [(rollout, arm, SHADOW_DIFF_SUM, "", difference), (rollout, arm, SHADOW_DIFF_N, "", 1.0)]
        self._add(items)

    def shadow_drop(self, rollout: str, arm: str, reason: str) -> None:
        self._add([(rollout, arm, SHADOW_DROP, clean_label(reason), 1.0)])

    def shadow_timeout(self, rollout: str, arm: str) -> None:
        self._add([(rollout, arm, SHADOW_TIMEOUT, "", 1.0)])

    def conversion(self, rollout: str, arm: str, user_id: str | None) -> None:
        self._add([(rollout, arm, CONVERSION, "", 1.0)])
        if user_id is not None:
            with self._lock:
                self._expose_locked((rollout, arm, clean_label(user_id)), int(self.clock()), True)

    def event(self, rollout: str, arm: str, name: str, count: float = 1.0) -> None:
        """A host's business event (a complaint, a refund) counted in the arm of the user it concerns."""
        self._add([(rollout, arm, EVENT, clean_label(name), float(count))])

    def hung(self, rollout: str, arm: str) -> None:
        """A call still running past the slow threshold: counted now as a slow calculation."""
        self._add([(rollout, arm, CALCULATIONS, "", 1.0), (rollout, arm, SLOW, "", 1.0),
                   (rollout, arm, HUNG, "", 1.0)])

    def late(self, rollout: str) -> None:
        """A v2 result that arrived after its deadline (v1 was served)."""
        self._add([(rollout, "v2", LATE, "", 1.0)])

    def response(self, rollout: str, arm: str, status: int) -> None:
        """The HTTP status of a request that calculated (availability is the non-5xx share)."""
        status_class = _STATUS_CLASSES[status // 100] if 0 <= status < 1000 else f"{status // 100}xx"
        minute = int(self.clock() // 60) * 60
        with self._lock:
            cell = self._calls.get((rollout, arm, minute))
            if cell is None:
                cell = self._calls[(rollout, arm, minute)] = _Calls()
            responses = cell.responses
            responses[status_class] = responses.get(status_class, 0) + 1

    def quarantined(self, reason: str, rows: int) -> None:
        """Counter rows SQL refused for good; counted app-wide under the reason."""
        self._add([(GLOBAL, GLOBAL, QUARANTINED, clean_label(reason)[:100], float(rows))])

    def sink_error(self, rollout: str, arm: str, sink: str) -> None:
        """A guarded sink raised; the caller got its outcome anyway."""
        self._add([(rollout, arm, SINK_ERROR, sink, 1.0)])

    def db_failure(self, where: str) -> None:
        """A failed database call: the extension's own (flags, metrics) or a calculator's (``v1``, ``v2``)."""
        self._add([(GLOBAL, GLOBAL, DB_ERROR, where, 1.0)])

    def local(self, rollout: str) -> dict[str, dict[str, dict[str, float]]]:
        """This process's lifetime totals for ``rollout``: ``{arm: {metric: {key: value}}}``."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        with self._lock:
            merged = defaultdict(float, self.totals)
            for (r, arm, _minute, metric, key), value in self._pending.items():
                merged[(r, arm, metric, key)] += value
            for (r, arm, minute), cell in self._calls.items():
                if r == rollout:
                    for (_r, _arm, _minute, metric, key), value in cell.rows(r, arm, minute):
                        merged[(r, arm, metric, key)] += value
        for (r, arm, metric, key), value in merged.items():
            if r == rollout:
                out.setdefault(arm, {}).setdefault(metric, {})[key] = value
        return out


# -- reading merged counters back (pure) ---------------------------------------------

_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(text: str) -> int:
    """``"5m"`` → 300 seconds; accepts s, m, h, d; at most 31 days."""
    raw = str(text).strip().lower()
    if len(raw) < 2 or raw[-1] not in _WINDOW_UNITS or not raw[:-1].isdigit():
        raise ValueError(f"window must look like 30s, 5m, 1h or 7d, got {text!r}")
    seconds = int(raw[:-1]) * _WINDOW_UNITS[raw[-1]]
    if not 0 < seconds <= 31 * 86400:
        raise ValueError(f"window must be between 1s and 31d, got {text!r}")
    return seconds


def _pct(part: float, whole: float) -> float | None:
    return part / whole * 100.0 if whole else None


class ArmSummary(TypedDict):
    """Figures of one arm (calls of users *assigned* that version) over a window; rates in percent."""

    latency_bins: NotRequired[dict[int, float]]
    calculations: int
    per_min: float
    avg_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    errors: int
    error_rate_pct: float | None
    errors_by_type: dict[str, int]
    fallbacks: int
    fallback_rate_pct: float | None
    fallbacks_by_reason: dict[str, int]
    unhandled: int
    sink_errors: int
    hung: int
    late: int
    responses: dict[str, int]
    slow: int
    slow_pct: float | None
    slow_per_min: float
    conversions: int
    users: int
    converted_users: int
    conversion_rate_pct: float | None
    #: the host's business events (``track_event``) by name
    events: dict[str, int]


class ShadowSummary(TypedDict):
    """Shadow runs of the version that ran off the request path."""

    latency_bins: NotRequired[dict[int, float]]
    compared: int
    by_agreement: dict[str, int]
    agreement_rate_pct: float | None
    avg_abs_difference: float | None
    p95_ms: float | None
    drops: int
    timeouts: int


def summarize_arm(metrics: Mapping[str, Mapping[str, float]], minutes: float,
                  users: int = 0, converted: int = 0, *, bins: bool = False) -> ArmSummary:
    """Figures of one arm from its merged ``{metric: {key: value}}``."""
    calcs = sum(metrics.get(CALCULATIONS, {}).values())
    bins_ = {int(k): v for k, v in metrics.get(LATENCY, {}).items()}
    errors = metrics.get(ERROR, {})
    fallbacks = metrics.get(FALLBACK, {})
    unhandled = metrics.get(UNHANDLED, {})
    slow = sum(metrics.get(SLOW, {}).values())
    summary: ArmSummary = {
        "calculations": int(calcs),
        "per_min": calcs / minutes if minutes else 0.0,
        "avg_ms": sum(metrics.get(DURATION_SUM, {}).values()) / calcs if calcs else None,
        "p50_ms": percentile(bins_, 0.50),
        "p95_ms": percentile(bins_, 0.95),
        "p99_ms": percentile(bins_, 0.99),
        "errors": int(sum(errors.values())),
        "error_rate_pct": _pct(sum(errors.values()), calcs),
        "errors_by_type": {k: int(v) for k, v in errors.items()},
        "fallbacks": int(sum(fallbacks.values())),
        "fallback_rate_pct": _pct(sum(fallbacks.values()), calcs),
        "fallbacks_by_reason": {k: int(v) for k, v in fallbacks.items()},
        "unhandled": int(sum(unhandled.values())),
        "sink_errors": int(sum(metrics.get(SINK_ERROR, {}).values())),
        "hung": int(sum(metrics.get(HUNG, {}).values())),
        "late": int(sum(metrics.get(LATE, {}).values())),
        "responses": {k: int(v) for k, v in metrics.get(RESPONSE, {}).items()},
        "slow": int(slow),
        "slow_pct": _pct(slow, calcs),
        "slow_per_min": slow / minutes if minutes else 0.0,
        "conversions": int(sum(metrics.get(CONVERSION, {}).values())),
        "users": users,
        "converted_users": converted,
        "conversion_rate_pct": _pct(converted, users),
        "events": {k: int(v) for k, v in metrics.get(EVENT, {}).items()},
    }
    if bins:
        summary["latency_bins"] = bins_
    return summary


def summarize_shadow(metrics: Mapping[str, Mapping[str, float]], *, bins: bool = False) -> ShadowSummary:
    """Shadow figures of the version that ran off the path."""
    classes = {k: int(v) for k, v in metrics.get(SHADOW, {}).items()}
    numeric = sum(classes.get(c, 0) for c in ("EXACT", "CLOSE", "MODERATE"))
    agreeing = classes.get("EXACT", 0) + classes.get("CLOSE", 0)
    diff_n = sum(metrics.get(SHADOW_DIFF_N, {}).values())
    latency = {int(k): v for k, v in metrics.get(SHADOW_LATENCY, {}).items()}
    summary: ShadowSummary = {
        "compared": sum(classes.values()),
        "by_agreement": classes,
        # EXACT + CLOSE among comparisons where both versions produced a number
        "agreement_rate_pct": _pct(agreeing, numeric),
        "avg_abs_difference": sum(metrics.get(SHADOW_DIFF_SUM, {}).values()) / diff_n if diff_n else None,
        "p95_ms": percentile(latency, 0.95),
        "drops": int(sum(metrics.get(SHADOW_DROP, {}).values())),
        "timeouts": int(sum(metrics.get(SHADOW_TIMEOUT, {}).values())),
    }
    if bins:
        summary["latency_bins"] = latency
    return summary
