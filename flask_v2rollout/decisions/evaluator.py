"""The runbook's decisions, run against the merged SQL metrics of one app.

Builds the gates' MetricsView and the alerts' metric snapshot from SQL, keeps
alert state and history in SQL, and acts: signals, a log line, the webhook,
the automatic rollback on CRITICAL and the autopilot. Evaluation runs under a
short SQL lease, so exactly one process evaluates at a time.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime, timezone
from collections.abc import Callable, Mapping
from typing import Any

from flask import Flask
from sqlalchemy import Engine, func, insert, select, update

from .. import signals
from . import lease
from ..rules.alerts import DEFAULT_METRICS, RuleSet, RuleState, Transition, default_rules, evaluate, load_rules
from ..errors import ConflictError, FlagError
from ..flags import AUTOPILOT, PERCENTAGE, SHADOW, FlagService, FlagSnapshot, FlagStore
from ..jsonlog import JsonlLog
from ..metrics.store import MetricStore
from ..registry import Probe, Rollout
from ..settings import Settings
from ..rules.gates import (
    Action,
    Decision,
    MANUAL_CHECKS,
    GateDecision,
    Stage,
    autopilot_step,
    build_gates,
    build_stages,
    evaluate_gate,
    gate_for,
    matrix_signals,
    next_stage,
    rollback_decision,
)
from ..models import alert_events_table, alert_state_table, checks_table, counters_table
from .notify import Router


log = logging.getLogger("flask_v2rollout.alerts")

LEASE_NAME = "v2rollout-evaluator"
AUTO_ROLLBACK_ACTOR = "auto-rollback"
AUTOPILOT_ACTOR = "autopilot"


def _frac(pct: float | None) -> float | None:
    return None if pct is None else pct / 100.0


class Evaluator:
    """Gates, alerts, rollback and autopilot for every rollout of one app."""

    def __init__(
        self, *, app: Flask, settings: Settings, rollouts: Mapping[str, Rollout], probes: Mapping[str, Probe],
        store: FlagStore, flags: FlagService, metric_store: MetricStore, engine: Callable[[], Engine],
        clock: Callable[[], float], jsonlog: JsonlLog | None, notifications: Router,
    ) -> None:
        self.app = app
        self.rollouts = rollouts
        self.probes = probes
        self.store = store
        self.flags = flags
        self.metric_store = metric_store
        self.engine = engine
        self.clock = clock
        self.jsonlog = jsonlog
        self.notifications = notifications
        self.stages = build_stages(settings.stage_durations or None)
        self.gates = build_gates(
            min_calculations=settings.gate_min_calculations,
            min_users=settings.gate_min_users,
        )
        self.min_users = settings.gate_min_users
        self.min_calculations = settings.gate_min_calculations
        self.rules_path: str | None = settings.alert_rules
        self.auto_rollback = settings.auto_rollback
        self.watch_s = settings.watch_interval_s
        self.lease_s = settings.lease_s
        self.every_s = settings.evaluate_every_s
        self.alert_window_s = settings.alert_window_s
        self._rules: RuleSet | None = None
        self._last_run = float("-inf")
        #: the autopilot's last word per rollout (hold reasons are not audited)
        self.last_actions: dict[str, dict[str, Any]] = {}

    def _engine(self) -> Engine:
        self.store.ensure_tables()
        return self.engine()

    # -- rules ------------------------------------------------------------------------
    @property
    def rules(self) -> RuleSet:
        """The alert rules, loaded (and fully validated) on first use."""
        if self._rules is None:
            known = set(DEFAULT_METRICS) | set(self.probes)
            self._rules = load_rules(self.rules_path, known) if self.rules_path else default_rules(known)
        return self._rules

    def rule_count(self) -> int:
        return len(self.rules)

    # -- stages -------------------------------------------------------------------------
    def stage_of(self, flags: Mapping[str, Any]) -> Stage:
        """The stage a percentage belongs to: 0 is shadow; above that, the highest stage reached,
        and at least canary (5 % after a canary "reduce to 5 %" is still canary)."""
        pct = float(flags[PERCENTAGE])
        current = self.stages[0]
        for stage in self.stages:
            if pct >= stage.percentage:
                current = stage
        if pct > 0 and current is self.stages[0] and len(self.stages) > 1:
            return self.stages[1]
        return current

    def timeline(self, name: str, stage: Stage, now: float) -> dict[str, Any]:
        """When the rollout entered its stage (and the one before), rollbacks since, from the audit."""
        rows = [r for r in reversed(self.store.audit(name, limit=500)) if r["flag"] == PERCENTAGE]
        entered = previous = None
        rollbacks: list[float] = []
        for row in rows:
            old = self.stage_of({PERCENTAGE: row["old_value"] or 0}).name
            new = self.stage_of({PERCENTAGE: row["new_value"]}).name
            if new != old:
                previous, entered = entered, row["at"]
                rollbacks = []
            if row["new_value"] < (row["old_value"] or 0):
                rollbacks.append(row["at"])
        last_change = rows[-1]["at"] if rows else None
        if entered is None or self.stage_of({PERCENTAGE: rows[-1]["new_value"]}).name != stage.name:
            entered = self._first_seen(name, now)
        return {"entered_at": entered, "previous_entered_at": previous, "rollbacks": len(rollbacks),
                "last_change_at": last_change}

    def _first_seen(self, name: str, now: float) -> float:
        """A rollout that never changed stage began when it was created (or first counted, if earlier)."""
        with self._engine().connect() as conn:
            first = conn.execute(
                select(func.min(counters_table.c.minute)).where(counters_table.c.rollout == name)
            ).scalar()
        known = [t for t in (self.store.created_at(name), first) if t is not None]
        return float(min(known)) if known else now

    # -- views ----------------------------------------------------------------------------
    def view(self, name: str, flags: Mapping[str, Any], now: float) -> tuple[dict[str, Any], Stage, dict[str, Any]]:
        """The gates' MetricsView over the current stage, the stage, and its timeline."""
        stage = self.stage_of(flags)
        line = self.timeline(name, stage, now)
        store = self.metric_store
        cur = store.window(name, 0, now, since=line["entered_at"], bins=True)
        view: dict[str, Any] = {arm: self._arm(cur["arms"][arm]) for arm in ("v1", "v2")}
        view["shadow"] = self._shadow(cur["shadow"]["v2"], cur["arms"]["v1"])
        if line["previous_entered_at"] is not None:
            prev = store.window(name, 0, line["entered_at"], since=line["previous_entered_at"])["arms"]["v2"]
            view["previous_stage"] = {"v2_p95_ms": prev["p95_ms"], "v2_fallback_rate": _frac(prev["fallback_rate_pct"]),
                                      "v2_avg_ms": prev["avg_ms"]}
        view["db_errors"] = cur["db_errors"]
        view["rollbacks_in_stage"] = line["rollbacks"]
        view["critical_incidents_in_stage"] = self._criticals_since(name, line["entered_at"])
        view["monitoring_ok"] = self.metric_store.backlog == 0 and self.store.healthy
        view["manual"] = self.manual(name, since=line["entered_at"])
        offline = self.rollouts[name].offline
        if offline:
            view["offline"] = dict(offline)
        return view, stage, line

    @staticmethod
    def _arm(arm: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "calculations": arm["calculations"], "error_rate": _frac(arm["error_rate_pct"]),
            "fallback_rate": _frac(arm["fallback_rate_pct"]), "p95_ms": arm["p95_ms"], "p99_ms": arm["p99_ms"],
            "avg_ms": arm["avg_ms"], "users": arm["users"], "conversions": arm["converted_users"],
            "latency_bins": arm["latency_bins"],
        }

    @staticmethod
    def _shadow(shadow: Mapping[str, Any], v1: Mapping[str, Any]) -> dict[str, Any]:
        classes = shadow["by_agreement"]
        runs = shadow["compared"] + shadow["timeouts"]
        failed = classes.get("v2_error", 0) + shadow["timeouts"]
        return {
            "runs": runs, "unhandled": classes.get("v2_error", 0),
            "completion_rate": (runs - failed) / runs if runs else None,
            "fallback_rate": classes.get("fallback", 0) / runs if runs else None,
            "compared": sum(classes.get(c, 0) for c in ("EXACT", "CLOSE", "MODERATE")),
            "agreement_rate": _frac(shadow["agreement_rate_pct"]),
            "v2_p95_ms": shadow["p95_ms"], "v1_p95_ms": v1["p95_ms"],
            "v2_latency_bins": shadow["latency_bins"],
        }

    def alert_metrics(self, name: str, flags: Mapping[str, Any], now: float) -> dict[str, float | None]:
        """The alert rules' metrics over the alert window (None where there is no data)."""
        m = self.metric_store.window(name, self.alert_window_s, now)
        v1, v2, shadow = m["arms"]["v1"], m["arms"]["v2"], m["shadow"]["v2"]

        def conversion(arm: Mapping[str, Any]) -> float | None:
            return arm["conversion_rate_pct"] if arm["users"] >= self.min_users else None

        values: dict[str, float | None] = {
            "v2_error_rate_pct": v2["error_rate_pct"], "v2_fallback_rate_pct": v2["fallback_rate_pct"],
            "v2_p95_ms": v2["p95_ms"], "v2_p99_ms": v2["p99_ms"], "v2_avg_ms": v2["avg_ms"],
            "v2_conversion_rate_pct": conversion(v2), "v1_conversion_rate_pct": conversion(v1),
            "db_connection_failures": float(m["db_errors"]), "v2_unhandled_exceptions": float(v2["unhandled"]),
            "v2_calculations_per_min": v2["per_min"], "v1_calculations_per_min": v1["per_min"],
            "v2_timeouts_pct": v2["slow_pct"], "agreement_rate_pct": shadow["agreement_rate_pct"],
            "v2_rollout_percentage": float(flags[PERCENTAGE]),
        }
        for probe, value in m["probes"].items():
            values[probe] = value
        for probe in self.probes:
            values.setdefault(probe, None)
        return values

    # -- gate -------------------------------------------------------------------------------
    def gate(self, name: str, now: float) -> dict[str, Any]:
        """The current gate's decision with every criterion, plus the rollback matrix."""
        stage, decision, matrix, line = self._decide(name, self.store.read_fresh(name).values, now)
        return gate_report(name, stage, decision, matrix, line, next_stage(stage, self.stages))

    def _decide(
        self, name: str, flags: Mapping[str, Any], now: float
    ) -> tuple[Stage, GateDecision, Decision, dict[str, Any]]:
        """The stage, its gate's decision, the rollback matrix's verdict, and the stage's timeline."""
        view, stage, line = self.view(name, flags, now)
        decision = evaluate_gate(gate_for(stage.name, self.gates), view, now_in_stage_s=now - line["entered_at"],
                                 stages=self.stages)
        matrix = rollback_decision(stage, **matrix_signals(
            view, min_calculations=self.min_calculations, min_users=self.min_users))
        return stage, decision, matrix, line

    # -- manual checks -------------------------------------------------------------------------
    def manual_records(self, name: str, *, since: float | None = None) -> dict[str, dict[str, Any]]:
        """The latest record of each manual check (recorded since ``since``): passed, actor, note, at."""
        c = checks_table.c
        query = select(c.check, c.passed, c.actor, c.note, c.created_at).where(c.rollout == name).order_by(c.id)
        with self._engine().connect() as conn:
            rows = conn.execute(query).all()
        out: dict[str, dict[str, Any]] = {}
        for check, passed, actor, note, created in rows:
            at = (created if created.tzinfo else created.replace(tzinfo=timezone.utc)).timestamp()
            if since is None or at >= since:
                out[check] = {"passed": bool(passed), "actor": actor, "note": note, "at": at}
        return out

    def manual(self, name: str, *, since: float | None = None) -> dict[str, bool]:
        """The latest verdict of each manual check (recorded since ``since``)."""
        return {k: v["passed"] for k, v in self.manual_records(name, since=since).items()}

    def record_check(self, name: str, check: str, passed: bool, *, actor: str, note: str | None = None) -> dict[str, Any]:
        """Record a manual gate criterion with who and when; bad input is a ``FlagError`` naming its field."""
        if check not in MANUAL_CHECKS:
            raise FlagError(f"unknown check {check!r}; manual checks: {', '.join(MANUAL_CHECKS)}", field="check")
        if not isinstance(passed, bool):
            raise FlagError(f"passed must be true or false, got {passed!r}", field="passed")
        if not isinstance(actor, str) or not actor.strip():
            raise FlagError("actor is required", field="actor")
        if note is not None and (not isinstance(note, str) or len(note) > 2000):
            raise FlagError("note must be a string of at most 2000 characters", field="note")
        created = datetime.fromtimestamp(self.clock(), timezone.utc)
        row = {"rollout": name, "check": check, "passed": int(passed), "actor": actor, "note": note,
               "created_at": created}
        with self._engine().begin() as conn:
            conn.execute(checks_table.insert().values(**row))
        return {**row, "passed": passed, "created_at": created.isoformat()}

    def checks(self, name: str) -> list[dict[str, Any]]:
        """Every manual check with its latest verdict in the current stage (``passed`` None: not recorded)."""
        stage = self.stage_of(self.store.read_fresh(name).values)
        recorded = self.manual_records(name, since=self.timeline(name, stage, self.clock())["entered_at"])
        return [{"check": key, "description": text, "passed": None, "actor": None, "note": None, "at": None,
                 **recorded.get(key, {})} for key, text in MANUAL_CHECKS.items()]

    # -- evaluation -----------------------------------------------------------------------------
    def maybe_run(self) -> None:
        """Called after each flush: evaluate when the period is due."""
        now = self.clock()
        if now - self._last_run >= self.every_s:
            self._last_run = now
            self.run(now)

    def run(self, now: float | None = None) -> dict[str, Any] | None:
        """Evaluate every rollout once; None when another process holds the lease."""
        now = self.clock() if now is None else now
        self.store.ensure_tables()
        engine = self._engine()
        if not lease.acquire(engine, LEASE_NAME, self.lease_s, clock=self.clock):
            return None
        try:
            with self.app.app_context():
                return {name: self._run_one(name, now) for name in sorted(self.rollouts)}
        finally:
            lease.release(engine, LEASE_NAME)

    def _run_one(self, name: str, now: float) -> dict[str, Any]:
        snap = self.store.read_fresh(name)
        flags = snap.values
        transitions = self._alerts(name, flags, now)
        rolled_back = False
        for t in transitions:
            self._announce(name, t)
            if t.kind == "fired" and t.rule.severity == "CRITICAL" and self.auto_rollback and not rolled_back:
                rolled_back = self._auto_rollback(name, t, snap)
        action = None
        if flags[AUTOPILOT] and not rolled_back:
            action = self._autopilot(name, now)
        return {"transitions": [_transition_dict(t) for t in transitions], "auto_rollback": rolled_back,
                "autopilot": action}

    def _alerts(self, name: str, flags: Mapping[str, Any], now: float) -> list[Transition]:
        values = self.alert_metrics(name, flags, now)
        t = alert_state_table.c
        with self._engine().connect() as conn:
            stored = {rule: RuleState(**json.loads(data)) for rule, data in conn.execute(
                select(t.rule, t.data).where(t.rollout == name)).all()}
        states = dict(stored)
        transitions = evaluate(self.rules, values, now, states)
        with self._engine().begin() as conn:
            for rule, st in states.items():
                row = {"status": st.status, "data": json.dumps(dataclasses.asdict(st)), "updated_at": now}
                if rule in stored:
                    conn.execute(update(alert_state_table).where(t.rollout == name, t.rule == rule).values(**row))
                else:
                    conn.execute(insert(alert_state_table).values(rollout=name, rule=rule, **row))
            for tr in transitions:
                conn.execute(insert(alert_events_table).values(
                    rollout=name, rule=tr.rule.name, severity=tr.rule.severity, event=tr.kind,
                    value=_first_value(tr), detail=json.dumps(tr.values), at=tr.at))
        return transitions

    def _announce(self, name: str, t: Transition) -> None:
        app: Flask = self.app
        payload = _transition_dict(t) | {"rollout": name}
        level = logging.WARNING if t.kind == "fired" else logging.INFO
        log.log(level, "v2rollout alert %s", json.dumps(payload, default=str, sort_keys=True))
        if self.jsonlog is not None:
            self.jsonlog.write({"event": f"alert_{t.kind}", "level": "WARNING" if t.kind == "fired" else "INFO",
                                      **payload})
        signal = signals.alert_fired if t.kind == "fired" else signals.alert_resolved
        signal.send(app, rollout=name, rule=t.rule.name, severity=t.rule.severity, values=dict(t.values),
                    action=t.rule.action, description=t.rule.description)
        self.notifications.route({"event": f"alert_{t.kind}", **payload}, t.rule.notify)

    def _auto_rollback(self, name: str, t: Transition, snap: FlagSnapshot) -> bool:
        if snap.percentage <= 0:
            return False
        try:
            made = self.flags.set_flags(
                name, {PERCENTAGE: 0}, actor=AUTO_ROLLBACK_ACTOR,
                reason=f"{t.rule.name} ({t.rule.severity}): {_values_text(t.values)}",
                expected_version=snap.version,
            )
        except ConflictError:
            return False  # someone changed the flags meanwhile; the next evaluation decides again
        return bool(made)

    def _autopilot(self, name: str, now: float) -> dict[str, Any]:
        snap = self.store.read_fresh(name)
        stage, decision, matrix, line = self._decide(name, snap.values, now)
        last = line["last_change_at"]
        elapsed_ok = last is None or now - last >= self.watch_s
        action = autopilot_step(stage, decision, matrix, elapsed_ok, current_percentage=snap.percentage,
                                stages=self.stages)
        result = {"kind": action.kind, "reason": action.reason, "target": action.target_percentage, "at": now}
        if action.kind != "hold":
            self._apply(name, action, snap)
        self.last_actions[name] = result
        signals.autopilot_acted.send(self.app, rollout=name, action=action.kind, reason=action.reason,
                                     target=action.target_percentage)
        return result

    def _apply(self, name: str, action: Action, snap: FlagSnapshot) -> None:
        changes: dict[str, Any] = {PERCENTAGE: action.target_percentage}
        if action.kind == "advance" and action.stage is not None:
            changes[SHADOW] = action.stage.shadow
        try:
            self.flags.set_flags(name, changes, actor=AUTOPILOT_ACTOR, reason=action.reason,
                                     expected_version=snap.version)
        except ConflictError:
            log.info("v2rollout: autopilot skipped %s: flags changed meanwhile", name)

    def _criticals_since(self, name: str, since: float) -> int:
        e = alert_events_table.c
        with self._engine().connect() as conn:
            return int(conn.execute(
                select(func.count()).select_from(alert_events_table)
                .where(e.rollout == name, e.severity == "CRITICAL", e.event == "fired", e.at >= since)
            ).scalar_one())

    def alerts(self, name: str | None = None) -> list[dict[str, Any]]:
        """Pending and firing alerts (of one rollout, or all)."""
        t = alert_state_table.c
        query = select(t.rollout, t.rule, t.data).where(t.status.in_(["pending", "firing"]))
        if name is not None:
            query = query.where(t.rollout == name)
        with self._engine().connect() as conn:
            rows = conn.execute(query.order_by(t.rollout, t.rule)).all()
        out = []
        for rollout, rule_name, data in rows:
            st = RuleState(**json.loads(data))
            rule = self.rules[rule_name] if rule_name in {r.name for r in self.rules} else None
            out.append({
                "rollout": rollout, "rule": rule_name, "state": st.status, "since": st.since,
                "fired_at": st.fired_at, "severity": rule.severity if rule else None,
                "description": rule.description if rule else None, "action": rule.action if rule else None,
                "notify": list(rule.notify) if rule else [],
            })
        return out

    def history(self, name: str | None = None, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Alert transitions, newest first."""
        e = alert_events_table.c
        query = select(alert_events_table).order_by(e.id.desc()).limit(limit).offset(offset)
        if name is not None:
            query = query.where(e.rollout == name)
        with self._engine().connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [{**dict(r), "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows]


def gate_report(name: str, stage: Stage, decision: GateDecision, matrix: Decision, line: Mapping[str, Any],
                upcoming: Stage | None) -> dict[str, Any]:
    """A gate decision as plain JSON-able data (API, CLI, dashboard)."""
    return {
        "rollout": name,
        "stage": stage.name,
        "from_stage": stage.name,
        "to_stage": upcoming.name if upcoming else None,
        "gate": decision.gate,
        "decision": decision.decision,
        "reasons": list(decision.reasons),
        "shoulds": {"passed": decision.shoulds_passed, "required": decision.shoulds_required},
        "elapsed_s": decision.elapsed_s,
        "min_duration_s": decision.min_duration_s,
        "entered_at": line["entered_at"],
        "criteria": [
            {
                "name": r.criterion.name, "kind": r.criterion.kind, "description": r.criterion.description,
                "value": r.value, "threshold": _threshold_text(r.criterion), "verdict": r.verdict,
                "sample": r.sample, "detail": r.detail,
            }
            for r in decision.results
        ],
        "latency_test": dataclasses.asdict(decision.latency_test) if decision.latency_test else None,
        "matrix": {"severity": matrix.severity, "action": matrix.action, "target_percentage": matrix.target_percentage,
                   "signals": list(matrix.signals)},
    }


def _threshold_text(criterion: Any) -> str | None:
    if criterion.threshold is None:
        return None if criterion.comparison in ("is_true", "is_false") else criterion.comparison
    if isinstance(criterion.threshold, tuple):
        low, high = criterion.threshold
        return f"{criterion.comparison} {low:g}–{high:g}"
    return f"{criterion.comparison} {criterion.threshold:g}"


def _first_value(t: Transition) -> float | None:
    for value in t.values.values():
        if isinstance(value, (int, float)):
            return float(value)
    return None


def _values_text(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in values.items())


def _transition_dict(t: Transition) -> dict[str, Any]:
    return {"rule": t.rule.name, "severity": t.rule.severity, "kind": t.kind, "at": t.at, "values": dict(t.values),
            "description": t.rule.description, "action": t.rule.action, "notify": list(t.rule.notify)}
