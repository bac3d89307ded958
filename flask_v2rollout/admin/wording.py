"""How the dashboard words a gate: values in the unit the criterion states, thresholds people read.

The gate report carries each criterion's condition as runbook text
(``v2_vs_v1_conversion_pct < 95%``); this turns it into ``< 0.95 × v1`` and the
measured value into ``1.01 × v1``, so the table never mixes ``0.0042`` with "< 1 %".
Pure: no Flask, so it is tested from plain dicts.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..metrics.catalogue import BY_NAME, INTERVALS

_OPS = {">=": "≥", "<=": "≤", "==": "=", "!=": "≠", ">": ">", "<": "<"}
_CLAUSE = re.compile(
    r"^\(?\s*(?P<metric>[a-z][a-z0-9_]*)(?:\s*(?P<arith>[*/])\s*(?P<other>[a-z][a-z0-9_]*))?"
    r"\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<number>-?\d+(?:\.\d+)?)\s*(?P<unit>%|ms|s|h|m)?\s*\)?$"
)
_SPLIT = re.compile(r"\s+(and|or)\s+")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Clause:
    """One ``metric OP number`` (or ``metric / other OP number``) of a condition."""

    metric: str
    op: str
    number: float
    other: str | None = None


def clauses(text: str) -> list[tuple[str, Clause | None]]:
    """``text`` split at and/or: (joining word, clause or None when it is not a simple comparison)."""
    parts = _SPLIT.split(text.strip())
    out: list[tuple[str, Clause | None]] = []
    for i in range(0, len(parts), 2):
        joint = parts[i - 1] if i else ""
        m = _CLAUSE.match(parts[i].strip())
        if m is None:
            out.append((joint, None))
            continue
        number = float(m["number"])
        unit = m["unit"]
        if unit in _SECONDS and m["metric"].endswith("_ms"):
            number = number * _SECONDS[unit] * 1000.0
        out.append((joint, Clause(m["metric"], m["op"], number, m["other"] if m["arith"] == "/" else None)))
    return out


def sides(threshold: str | None) -> tuple[str | None, str | None]:
    """(what passes, what fails) of a report's threshold text; a plain condition is the pass side."""
    if not threshold:
        return None, None
    found = re.match(r"^pass: (?P<p>.*); fail: (?P<f>.*)$", threshold)
    return (found["p"], found["f"]) if found else (threshold, None)


# --------------------------------------------------------------------------- numbers in their units


def _g(x: float, digits: int = 3) -> str:
    text = f"{x:.{digits}g}"
    return text if "e" not in text else f"{x:.2f}"


def style(metric: str, other: str | None = None) -> str:
    """How a metric's numbers read: ratio (× v1), points, %, ms, h, p or a plain count."""
    if other is not None:
        return "times_v1" if other.startswith("v1_") else "times_previous"
    if metric.startswith("check_"):
        return "check"
    if metric == "srm_p_value":
        return "p"
    if "_vs_v1_" in metric and metric.endswith("_pct"):
        return "ratio_v1"
    if "_minus_" in metric or "_change" in metric or metric.endswith("_vs_previous_stage_pct"):
        return "points"
    if metric.endswith("_vs_previous_stage"):
        return "times_previous"
    if metric.endswith("_pct"):
        return "pct"
    if metric.endswith("_ms"):
        return "ms"
    if metric.endswith("_hours"):
        return "hours"
    return "count"


def amount(value: float | None, kind: str) -> str:
    """``value`` in ``kind``'s unit (see :func:`style`); ``–`` for no data."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if kind == "ratio_v1":
        return f"{value / 100:.2f} × v1"
    if kind == "times_v1":
        return f"{_g(value)} × v1"
    if kind == "times_previous":
        return f"{_g(value)} × previous stage"
    if kind == "points":
        return "0 pts" if value == 0 else f"{value:+.2f} pts"
    if kind == "pct":
        return f"{_g(value)} %"
    if kind == "ms":
        return f"{value:.0f} ms" if abs(value) >= 10 else f"{_g(value, 2)} ms"
    if kind == "hours":
        return f"{_g(value)} h"
    if kind == "p":
        return f"p = {_g(value, 2)}"
    if kind == "check":
        return "confirmed" if value else "refused"
    return f"{value:.0f}" if value == int(value) else _g(value)


def _bound(clause: Clause) -> str:
    kind = style(clause.metric, clause.other)
    if kind == "check":
        return "confirmed" if (clause.number == 1) == (clause.op == "==") else "refused"
    if kind == "p":
        return f"p {_OPS[clause.op]} {_g(clause.number)}"
    return f"{_OPS[clause.op]} {amount(clause.number, kind)}"


def label(metric: str) -> str:
    found = BY_NAME.get(metric)
    return found.label if found is not None and found.label else metric.replace("_", " ")


def condition_text(text: str | None, *, measured: str | None = None) -> str:
    """A runbook condition as people read it: ``≥ 0.95 × v1 and whole interval > 0.90 × v1``.

    Clauses on the measured metric (or its observed/interval twin) drop the metric's name;
    an interval metric reads "whole interval", since it holds only when all of it does.
    """
    if not text:
        return "–"
    parsed = clauses(text)
    if any(c is None for _, c in parsed):
        return text
    items = [c for _, c in parsed if c is not None]
    joints = [j for j, _ in parsed]
    measured = measured or items[0].metric
    # "a >= 60 and a <= 85" → "60–85 %"
    if (len(items) == 2 and joints[1] == "and" and items[0].metric == items[1].metric and items[0].other is None
            and {items[0].op, items[1].op} == {">=", "<="}):
        low, high = sorted((items[0].number, items[1].number))
        kind = style(items[0].metric)
        return f"{amount(low, kind).split(' ')[0]}–{amount(high, kind)}"
    words = []
    for joint, item in zip(joints, items, strict=True):
        same = _base(item.metric) == _base(measured)
        prefix = "" if same else f"{label(item.metric)} "
        if item.metric in INTERVALS:
            prefix += "(whole interval) " if prefix else "whole interval "
        words.append(f"{joint} {prefix}{_bound(item)}".strip())
    return " ".join(words)


def _base(metric: str) -> str:
    return metric.replace("_observed", "")


def measured_metric(threshold: str | None) -> tuple[str, str | None] | None:
    """The metric a criterion's value is of (left side of the first comparison it reports), and its divisor."""
    passing, failing = sides(threshold)
    text = failing or passing
    if not text:
        return None
    first = clauses(text)[0][1]
    return None if first is None else (first.metric, first.other)


# --------------------------------------------------------------------------- a gate's rows


VERDICTS = {
    "blocker": {"pass": ("not triggered", "pass"), "fail": ("TRIGGERED", "fail")},
    "any": {"pass": ("pass", "pass"), "fail": ("fail", "fail"), "insufficient": ("not enough data", "insufficient"),
            "pending": ("pending", "pending")},
}


def verdict(kind: str, verdict_: str) -> tuple[str, str]:
    """(label, css class) of a verdict: a blocker is "not triggered" or "TRIGGERED", never "pass"."""
    own = VERDICTS.get(kind, {})
    return own.get(verdict_) or VERDICTS["any"].get(verdict_, (verdict_, "pending"))


@dataclass(frozen=True)
class Row:
    """One criterion as the gate table shows it."""

    kind: str
    description: str
    value: str
    interval: str
    #: what the interval is of, when it is not the value's metric ("error rate vs v1")
    interval_of: str
    threshold: str
    fails: str
    verdict: str
    verdict_css: str
    detail: str
    #: the interval metric, when the dashboard charts this criterion over time
    chart: str | None


def row(criterion: Mapping[str, Any]) -> Row:
    """A gate report's criterion as words in its own units."""
    kind = criterion["kind"]
    passing, failing = sides(criterion.get("threshold"))
    found = measured_metric(criterion.get("threshold"))
    value: Any = criterion.get("value")
    if found is None:
        shown = {"pass": "confirmed", "fail": "refused"}.get(criterion["verdict"], "–")
    elif isinstance(value, bool):
        shown = "yes" if value else "no"
    else:
        shown = amount(value, style(*found))
    interval = criterion.get("interval")
    bounds = interval_of = ""
    if interval:
        interval_of = "" if found and _base(interval["metric"]) == _base(found[0]) else label(interval["metric"])
        bounds = interval_text(interval["lower"], interval["upper"], style(interval["metric"]))
    measured = found[0] if found else None
    if found is None:  # a manual check: a person records it
        threshold, fails = ("refused by a person" if kind == "blocker" else "confirmed by a person"), ""
    elif kind == "blocker":
        threshold = condition_text(failing or passing, measured=measured)
        fails = ""
    else:
        threshold = condition_text(passing, measured=measured) if passing else "–"
        fails = condition_text(failing, measured=measured) if failing else ""
    label_, css = verdict(kind, criterion["verdict"])
    detail = criterion.get("detail") or ""
    if interval and detail.startswith("bounds ["):  # the bounds have their own column now
        detail = detail.split(": ", 1)[1] if ": " in detail else ""
    return Row(kind, criterion["description"], shown, bounds, interval_of, threshold, fails, label_, css, detail,
               interval["metric"] if interval else None)


def interval_text(lower: float | None, upper: float | None, kind: str) -> str:
    """``0.93 to 1.09 × v1``: both bounds in ``kind``'s unit, said once."""
    low, high = amount(lower, kind), amount(upper, kind)
    number_, _, unit = low.partition(" ")
    if unit and high.endswith(" " + unit):
        return f"{number_} to {high}"
    return f"{low} to {high}"


# --------------------------------------------------------------------------- targets of the tiles and charts


@dataclass(frozen=True)
class Target:
    """What a figure must stay within: ``low``/``high`` bounds (None: open), and how it reads."""

    low: float | None
    high: float | None
    text: str

    def judge(self, value: float | None) -> str | None:
        """``ok``, ``bad`` or None (no data)."""
        if value is None:
            return None
        if self.low is not None and value < self.low:
            return "bad"
        if self.high is not None and value > self.high:
            return "bad"
        return "ok"


#: tile → metrics a gate may state its target on, and the runbook's target when the current gate states none
TARGETS: Mapping[str, tuple[tuple[str, ...], Target]] = {
    "p95": (("v2_p95_ms", "shadow_p95_ms"), Target(None, 500.0, "< 500 ms")),
    "errors": (("v2_error_rate_pct",), Target(None, 1.0, "< 1 %")),
    "fallbacks": (("v2_fallback_rate_pct", "shadow_fallback_rate_pct"), Target(None, 20.0, "< 20 %")),
    "agreement": (("shadow_agreement_rate_pct",), Target(60.0, 85.0, "60–85 %")),
}


def targets(criteria: Sequence[Mapping[str, Any]]) -> dict[str, Target]:
    """Each tile's target: the current gate's must on that metric, else the runbook's."""
    out = {key: default for key, (_, default) in TARGETS.items()}
    for key, (metrics, _) in TARGETS.items():
        for c in criteria:
            if c["kind"] != "must":
                continue
            passing, _ = sides(c.get("threshold"))
            parsed = [cl for _, cl in clauses(passing or "") if cl is not None and cl.other is None]
            mine = [cl for cl in parsed if cl.metric in metrics]
            if not mine:
                continue
            low = max((cl.number for cl in mine if cl.op in (">", ">=")), default=None)
            high = min((cl.number for cl in mine if cl.op in ("<", "<=")), default=None)
            out[key] = Target(low, high, condition_text(" and ".join(f"{cl.metric} {cl.op} {cl.number:g}"
                                                                      for cl in mine)))
            break
    return out


def thresholds_on(metric: str, criteria: Sequence[Mapping[str, Any]]) -> list[tuple[float, str]]:
    """The numbers the current gate's musts and blockers compare ``metric`` with (chart threshold lines)."""
    found: dict[float, str] = {}
    for c in criteria:
        if c["kind"] not in ("must", "blocker"):
            continue
        _, failing = sides(c.get("threshold"))
        text = failing if failing is not None else (c.get("threshold") if c["kind"] == "blocker" else None)
        for _, cl in clauses(text or ""):
            if cl is not None and cl.metric == metric and cl.other is None:
                found.setdefault(cl.number, "blocker" if c["kind"] == "blocker" else "must")
    return sorted(found.items())


# --------------------------------------------------------------------------- time


def duration(seconds: Any) -> str:
    """``45 s``, ``12 min``, ``3.5 h``: hours above an hour, like the gate's reasons."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def ago(seconds: Any) -> str:
    """``just now``, ``12 s ago``, ``4 min ago``, ``2.1 h ago``."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "never"
    if seconds < 0:
        return "just now"
    if seconds < 5:
        return "just now"
    if seconds < 86400:
        return f"{duration(seconds)} ago"
    return f"{seconds / 86400:.1f} d ago"


# --------------------------------------------------------------------------- the autopilot


@dataclass(frozen=True)
class NextAction:
    """What the autopilot will do next and when, in words."""

    headline: str
    when: str
    why: str
    css: str


def next_action(*, gate: Mapping[str, Any], autopilot: Mapping[str, Any] | None, autopilot_on: bool,
                percentage: float, now: float) -> NextAction:
    """The autopilot's next step from the gate report and its last word.

    A report that carries ``next_advance_at`` (the time the gate may next say GO) is
    quoted as is; otherwise the end of the stage's minimum duration is the earliest time.
    """
    to_stage = gate.get("to_stage")
    matrix = gate.get("matrix") or {}
    target = matrix.get("target_percentage")
    last = f"last ran {ago(now - autopilot['at'])}" if autopilot and autopilot.get("at") is not None else ""
    if not autopilot_on:
        return NextAction("Autopilot off", "changes are made by hand",
                          f"gate says {gate.get('decision')}", "off")
    if target is not None and target < percentage:
        how = "at once" if matrix.get("severity") == "CRITICAL" else "after the watch interval"
        return NextAction(f"Roll back to {target:g} %", how,
                          f"rollback matrix {matrix.get('severity')}: {matrix.get('action')}", "bad")
    if to_stage is None:
        return NextAction("Hold", "last stage", "nothing further to advance to", "hold")
    eta = gate.get("next_advance_at")
    if gate.get("decision") == "GO":
        if isinstance(eta, (int, float)) and eta > now:
            held = "outside the decision windows" if gate.get("decision_window_open") is False else "watch interval"
            return NextAction(f"Advance to {str(to_stage).title()}", f"in {duration(eta - now)}",
                              f"gate says GO; held: {held}", "hold")
        when = "at its next evaluation" + (f" ({last})" if last else "")
        return NextAction(f"Advance to {str(to_stage).title()}", when, "gate says GO", "go")
    if not isinstance(eta, (int, float)):
        remaining = float(gate.get("min_duration_s") or 0) - float(gate.get("elapsed_s") or 0)
        eta = now + remaining if remaining > 0 else None
    when = (f"not before {duration(eta - now)} from now" if eta is not None and eta > now
            else "once the gate says GO")
    reasons = gate.get("reasons") or []
    why = f"gate {gate.get('decision')}" + (f": {reasons[0]}" if reasons else "")
    return NextAction(f"Advance to {str(to_stage).title()}", when, why + (f" · {last}" if last else ""), "hold")
