"""The runbook's decisions, run against the merged SQL metrics of one app.

Loads the runbook (the packaged file overlaid by ``V2ROLLOUT_RUNBOOK_FILE``)
when the app is initialised, so a broken file stops ``init_app``. Turns a
window of merged SQL metrics into the catalogue's named values — the alert
window for the alert rules, the current stage's window for its gate and
rollback matrix — keeps alert state and history in SQL, and acts: signals, a
log line, the notification router, the automatic rollback on CRITICAL and the autopilot.
Evaluation runs under a short SQL lease, so exactly one process evaluates at a time; the periodic
evaluation is moreover the duty of one process (the holder of a second lease, renewed each period), so
the other workers spend nothing on it.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypedDict

from flask import Flask
from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from .. import signals
from ..errors import ConflictError, FlagError
from ..flags import (
    AUTOPILOT,
    MAX_ACTOR,
    MAX_NOTE,
    MAX_REASON,
    PERCENTAGE,
    SHADOW,
    FlagService,
    FlagSnapshot,
    FlagStore,
    validate_text,
)
from ..jsonlog import JsonlLog
from ..metrics.catalogue import INTERVALS, Facts, Minimums, values
from ..metrics.recorder import CALCULATIONS, NEW_USERS
from ..metrics.store import MetricStore
from ..models import alert_events_table, alert_state_table, checks_table, counters_table
from ..registry import Rollout
from ..rules.actions import percentage_before
from ..rules.alerts import SEVERITIES, Rule, RuleSet, RuleState, Transition, evaluate, rearm
from ..rules.conditions import Interval, Value
from ..rules.gates import (
    CHECK_PREFIX,
    Action,
    Criterion,
    Decision,
    GateDecision,
    Histograms,
    Stage,
    autopilot_step,
    evaluate_gate,
    gate_for,
    matrix_for,
    next_stage,
    rollback_decision,
    with_durations,
)
from ..rules.runbook import Incident, load_runbook
from ..settings import Settings
from ..targeting import TARGETED_ARMS
from . import lease
from .notify import Router

log = logging.getLogger("flask_v2rollout.alerts")

LEASE_NAME = "v2rollout-evaluator"
#: held by the one process that evaluates periodically, for a period and a lease (a dead holder's lapses)
DUTY_LEASE_NAME = "v2rollout-evaluator-duty"
AUTO_ROLLBACK_ACTOR = "auto-rollback"
AUTOPILOT_ACTOR = "autopilot"


class Evaluator:
    """Gates, alerts, rollback and autopilot for every rollout of one app."""

    def __init__(
        self, *, app: Flask, settings: Settings, rollouts: Mapping[str, Rollout], store: FlagStore,
        flags: FlagService, metric_store: MetricStore, engine: Callable[[], Engine], clock: Callable[[], float],
        jsonlog: JsonlLog | None, notifications: Router,
    ) -> None:
        self.app = app
        self.rollouts = rollouts
        self.store = store
        self.flags = flags
        self.metric_store = metric_store
        self.engine = engine
        self.clock = clock
        self.jsonlog = jsonlog
        self.notifications = notifications
        self.minimums: Minimums = {"calculations": float(settings.gate_min_calculations),
                                   "users": float(settings.gate_min_users)}
        #: level and tuning of the anytime-valid intervals
        self.alpha, self.tuning = settings.gate_alpha, settings.sequential_tuning
        #: the packaged runbook overlaid by the host's file, validated whole (raises AlertRuleError)
        self.runbook = load_runbook(settings.runbook_file, minimums=self.minimums,
                                    alert_min_calculations=settings.alert_min_calculations)
        self.stages = with_durations(self.runbook.stages, settings.stage_durations or None)
        self.gates = self.runbook.gates
        self.rules: RuleSet = self.runbook.rules
        #: manual check key → what a person confirms
        self.manual_checks: Mapping[str, str] = self.runbook.manual_checks
        self.auto_rollback = settings.auto_rollback
        #: when the autopilot may advance (None: any time); rollbacks never wait for a window
        self.windows = settings.decision_windows
        self.watch_s = settings.watch_interval_s
        self.lease_s = settings.lease_s
        self.every_s = settings.evaluate_every_s
        self.alert_window_s = settings.alert_window_s
        self._last_run: float | None = None
        #: the autopilot's last word per rollout (hold reasons are not audited)
        self.last_actions: dict[str, dict[str, Any]] = {}

    def _engine(self) -> Engine:
        self.store.ensure_tables()
        return self.engine()

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
        lowered = bool(rows) and rows[-1]["new_value"] < (rows[-1]["old_value"] or 0)
        if entered is None or self.stage_of({PERCENTAGE: rows[-1]["new_value"]}).name != stage.name:
            entered = self._first_seen(name, now)
        return {"entered_at": entered, "previous_entered_at": previous, "rollbacks": len(rollbacks),
                "last_change_at": last_change, "last_change_lowered": lowered}

    def _first_seen(self, name: str, now: float) -> float:
        """A rollout that never changed stage began when it was created (or first counted, if earlier)."""
        with self._engine().connect() as conn:
            first = conn.execute(
                select(func.min(counters_table.c.minute)).where(counters_table.c.rollout == name)
            ).scalar()
        known = [t for t in (self.store.created_at(name), first) if t is not None]
        return float(min(known)) if known else now

    # -- named values -----------------------------------------------------------------------
    def stage_values(
        self, name: str, flags: Mapping[str, Any], now: float
    ) -> tuple[dict[str, Value], Histograms, Stage, dict[str, Any]]:
        """The catalogue's values over the current stage, its latency histograms, the stage and its timeline."""
        stage = self.stage_of(flags)
        line = self.timeline(name, stage, now)
        store = self.metric_store
        cur = store.window(name, 0, now, since=line["entered_at"], bins=True)
        previous = None
        if line["previous_entered_at"] is not None:
            previous = store.window(name, 0, line["entered_at"], since=line["previous_entered_at"])["arms"]["v2"]
        changed = line["last_change_at"]
        srm_users = None
        if changed is not None and changed > line["entered_at"]:  # a change inside the stage (10 % → 5 %)
            srm_users = store.users(name, since=changed, now=now)
        facts = Facts(
            cur, percentage=float(flags[PERCENTAGE]), previous_v2=previous, rollbacks=line["rollbacks"],
            srm_users=srm_users,
            critical_incidents=self._criticals_since(name, line["entered_at"]),
            monitoring_ok=self.metric_store.backlog == 0 and self.store.healthy,
            offline=dict(self.rollouts[name].offline or {}), minimums=self.minimums, alpha=self.alpha,
            tuning=self.tuning,
        )
        named = values(facts, probes=self._probes(cur), checks=self.manual(name, since=line["entered_at"]))
        histograms = {"v1": cur["arms"]["v1"]["latency_bins"], "v2": cur["arms"]["v2"]["latency_bins"],
                      "shadow": cur["shadow"]["v2"]["latency_bins"]}
        return named, histograms, stage, line

    def alert_values(
        self, name: str, flags: Mapping[str, Any], now: float, *, since: float | None = None,
    ) -> dict[str, Value]:
        """The catalogue's values over the alert window (None where there is no data).

        ``since`` (the last percentage change) cuts the window: after a rollback or a
        resume the rules read only what was served at the new percentage.
        """
        if since is not None and since > now - self.alert_window_s:
            window = self.metric_store.window(name, self.alert_window_s, now, since=since)
        else:
            window = self.metric_store.window(name, self.alert_window_s, now)
        facts = Facts(window, percentage=float(flags[PERCENTAGE]), minimums=self.minimums, alpha=self.alpha,
                      tuning=self.tuning)
        return values(facts, probes=self._probes(window))

    def daily(self, name: str, now: float) -> dict[str, Any]:
        """The runbook's daily figures over the last 24 h (status, dashboard)."""
        window = self.metric_store.window(name, 86400, now)
        v1, v2 = window["arms"]["v1"], window["arms"]["v2"]
        return {
            "total_calculations_24h": v1["calculations"] + v2["calculations"],
            "agreement_rate_pct_24h": window["shadow"]["v2"]["agreement_rate_pct"],
            "fallback_reasons_breakdown_24h": dict(v2["fallbacks_by_reason"]),
            "top_subjects_24h": [list(item) for item in window["top_subjects"]],
            "availability_pct_24h": window["availability_pct"],
        }

    def _probes(self, window: Mapping[str, Any]) -> dict[str, float | None]:
        """Every declared probe (no data until sampled), then whatever the host's probes sampled."""
        return {**{probe: None for probe in self.runbook.probes}, **window["probes"]}

    # -- gate -------------------------------------------------------------------------------
    def gate(self, name: str, now: float) -> GateReport:
        """The current gate's decision with every criterion, plus the rollback matrix."""
        snap = self.store.read_fresh(name)
        stage, decision, matrix, line = self._decide(name, snap.values, now)
        upcoming = next_stage(stage, self.stages)
        return gate_report(name, stage, decision, matrix, line, upcoming, snap.version,
                           next_advance_at=self.next_advance_at(line, decision, upcoming, now),
                           window_open=self.windows is None or self.windows.is_open(now),
                           targeted=self.targeted(name, since=line["entered_at"], now=now))

    def next_advance_at(self, line: Mapping[str, Any], decision: GateDecision, upcoming: Stage | None,
                        now: float) -> float | None:
        """The earliest epoch second the autopilot may advance: the stage's minimum duration and
        the watch interval since the last change have passed, inside a decision window.

        None at the last stage. The autopilot advances then only if the gate says GO.
        """
        if upcoming is None:
            return None
        earliest = max(now, line["entered_at"] + decision.min_duration_s)
        if line["last_change_at"] is not None:
            earliest = max(earliest, line["last_change_at"] + self.watch_s)
        return earliest if self.windows is None else self.windows.next_open(earliest)

    def targeted(self, name: str, *, since: float, now: float) -> dict[str, dict[str, int]]:
        """Calculations and users of the allow/deny-listed users since ``since``: counted apart from the arms."""
        calcs = self.metric_store.totals(name, CALCULATIONS, since=since, now=now)
        users = self.metric_store.totals(name, NEW_USERS, since=since, now=now)
        return {arm: {"calculations": calcs.get(arm, 0), "users": users.get(arm, 0)}
                for arm in TARGETED_ARMS.values()}

    def gate_history(self, name: str, now: float, *, points: int = 24) -> GateHistory:
        """The current gate's interval metrics at ``points`` evenly spaced times since the stage began.

        Each point is what the gate read then: the stage's window from its start to that
        time (cumulative), so an operator sees the estimate settle and the bounds narrow.
        """
        snap = self.store.read_fresh(name)
        stage = self.stage_of(snap.values)
        line = self.timeline(name, stage, now)
        start = float(line["entered_at"])
        metrics = sorted({m for c in gate_for(stage.name, self.gates).criteria for m in c.metrics if m in INTERVALS})
        previous = None
        if line["previous_entered_at"] is not None:
            previous = self.metric_store.window(name, 0, start, since=line["previous_entered_at"])["arms"]["v2"]
        out: dict[str, list[HistoryPoint]] = {m: [] for m in metrics}
        span = max(0.0, now - start)
        for i in range(1, points + 1) if metrics else ():
            at = start + span * i / points
            window = self.metric_store.window(name, 0, at, since=start, bins=True)
            facts = Facts(window, percentage=float(snap.values[PERCENTAGE]), previous_v2=previous,
                          minimums=self.minimums, alpha=self.alpha, tuning=self.tuning)
            named = values(facts)
            for m in metrics:
                v = named.get(m)
                out[m].append({"at": at, "point": _finite(v.point), "lower": _finite(v.lower),
                               "upper": _finite(v.upper)} if isinstance(v, Interval)
                              else {"at": at, "point": None, "lower": None, "upper": None})
        return {"rollout": name, "stage": stage.name, "entered_at": start, "now": now, "metrics": out}

    def _decide(
        self, name: str, flags: Mapping[str, Any], now: float
    ) -> tuple[Stage, GateDecision, Decision, dict[str, Any]]:
        """The stage, its gate's decision, the rollback matrix's verdict, and the stage's timeline."""
        named, histograms, stage, line = self.stage_values(name, flags, now)
        in_stage = max(0.0, now - line["entered_at"])  # clocks of processes and SQL may differ by a little
        decision = evaluate_gate(gate_for(stage.name, self.gates), named, now_in_stage_s=in_stage,
                                 stages=self.stages, histograms=histograms)
        matrix = rollback_decision(matrix_for(stage, self.runbook.matrices), named)
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
            at = (created if created.tzinfo else created.replace(tzinfo=UTC)).timestamp()
            if since is None or at >= since:
                out[check] = {"passed": bool(passed), "actor": actor, "note": note, "at": at}
        return out

    def manual(self, name: str, *, since: float | None = None) -> dict[str, bool]:
        """The latest verdict of each manual check (recorded since ``since``)."""
        return {k: v["passed"] for k, v in self.manual_records(name, since=since).items()}

    def record_check(
        self, name: str, check: str, passed: bool, *, actor: str, note: str | None = None,
    ) -> dict[str, Any]:
        """Record a manual gate criterion with who and when; bad input is a ``FlagError`` naming its field."""
        if check not in self.manual_checks:
            known = ", ".join(self.manual_checks)
            raise FlagError(f"unknown check {check!r}; manual checks: {known}", field="check")
        if not isinstance(passed, bool):
            raise FlagError(f"passed must be true or false, got {passed!r}", field="passed")
        validate_text(actor, "actor", MAX_ACTOR, required=True)
        validate_text(note, "note", MAX_NOTE)
        created = datetime.fromtimestamp(self.clock(), UTC)
        row = {"rollout": name, "check": check, "passed": int(passed), "actor": actor, "note": note,
               "created_at": created}
        with self._engine().begin() as conn:
            conn.execute(checks_table.insert().values(**row))
        return {**row, "passed": passed, "created_at": created.isoformat()}

    def checks(self, name: str) -> list[dict[str, Any]]:
        """Every manual check with its latest verdict in the current stage (``passed`` None: not recorded) and
        whether the current stage's gate reads it (``in_gate``)."""
        stage = self.stage_of(self.store.read_fresh(name).values)
        recorded = self.manual_records(name, since=self.timeline(name, stage, self.clock())["entered_at"])
        read = self.gate_checks(stage)
        return [{"check": key, "description": text, "passed": None, "actor": None, "note": None, "at": None,
                 **recorded.get(key, {}), "in_gate": key in read} for key, text in self.manual_checks.items()]

    def gate_checks(self, stage: Stage) -> frozenset[str]:
        """The manual checks the gate leaving ``stage`` reads (none when no gate leaves it)."""
        try:
            gate = gate_for(stage.name, self.gates)
        except KeyError:
            return frozenset()
        return frozenset(m.removeprefix(CHECK_PREFIX) for c in gate.criteria for m in c.metrics
                         if m.startswith(CHECK_PREFIX))

    # -- evaluation -----------------------------------------------------------------------------
    def maybe_run(self) -> None:
        """Called after each flush: evaluate when the period is due."""
        now = self.clock()
        if self._last_run is None:  # the period starts with this process's first flush
            self._last_run = now
            return
        if now - self._last_run >= self.every_s:
            self._last_run = now
            if lease.acquire(self._engine(), DUTY_LEASE_NAME, self.every_s + self.lease_s, clock=self.clock):
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
        """Alerts, then the rollback they call for, then the record and the announcements, then the autopilot.

        Nothing sits between a CRITICAL condition and its rollback: the states are
        written and the notifications queued only after the rollback landed (or failed).
        """
        snap = self.store.read_fresh(name)
        flags = snap.values
        stage = self.stage_of(flags)
        line = self.timeline(name, stage, now)
        named = self.alert_values(name, flags, now, since=_alert_window_start(line))
        stored = self._alert_states(name)
        states = dict(stored)
        transitions = rearm(self.rules, states, snap.percentage, now)
        transitions += evaluate(self.rules, named, now, states)
        acting = [self.rules[rule] for rule, st in states.items()
                  if st.status == "firing" and rule in self.rules and self.rules[rule].rollback is not None]
        applied = None
        if acting and self.auto_rollback and snap.percentage > 0:
            applied = self._rule_rollback(name, acting, snap, named)
        rolled_back = bool(applied and applied["landed"])
        self._store_alerts(name, stored, states, transitions, now)
        payloads = [self._transition_dict(t, applied) for t in transitions]
        for t, payload in zip(transitions, payloads, strict=True):
            self._announce(name, t, payload)
        action = None
        if flags[AUTOPILOT] and not rolled_back:
            action = self._autopilot(name, now)
        return {"transitions": payloads, "auto_rollback": rolled_back, "rollback": applied, "autopilot": action}

    def _alert_states(self, name: str) -> dict[str, RuleState]:
        t = alert_state_table.c
        with self._engine().connect() as conn:
            return {rule: RuleState(**json.loads(data)) for rule, data in conn.execute(
                select(t.rule, t.data).where(t.rollout == name)).all()}

    def _store_alerts(self, name: str, stored: Mapping[str, RuleState], states: Mapping[str, RuleState],
                      transitions: list[Transition], now: float) -> None:
        t = alert_state_table.c
        with self._engine().begin() as conn:
            for rule, st in states.items():
                row = {"status": st.status, "data": json.dumps(dataclasses.asdict(st)), "updated_at": now}
                if rule in stored:
                    conn.execute(update(alert_state_table).where(t.rollout == name, t.rule == rule).values(**row))
                else:
                    conn.execute(insert(alert_state_table).values(rollout=name, rule=rule, **row))
            for tr in transitions:
                detail = _plain(tr.values) | ({"note": tr.note} if tr.note else {})
                conn.execute(insert(alert_events_table).values(
                    rollout=name, rule=tr.rule.name, severity=tr.rule.severity, event=tr.kind,
                    value=_first_value(tr), detail=json.dumps(detail), at=tr.at))

    def incident(self, severity: str) -> Incident:
        """The runbook's incident label and response target of an alert severity."""
        return self.runbook.severities[severity]

    def _transition_dict(self, t: Transition, applied: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A transition as JSON: the rule's incident label and response target, its rollback, and — on
        the firing of the rule whose rollback was applied — what was applied (else ``None``)."""
        incident = self.incident(t.rule.severity)
        mine = applied is not None and t.kind == "fired" and applied["rule"] == t.rule.name
        return _transition_dict(t) | {"sev": incident.label, "response": incident.response,
                                      "rollback": t.rule.rollback.describe() if t.rule.rollback else None,
                                      "applied": dict(applied) if mine and applied else None}

    def _announce(self, name: str, t: Transition, payload: Mapping[str, Any]) -> None:
        app: Flask = self.app
        payload = {**payload, "rollout": name}
        level = logging.WARNING if t.kind == "fired" else logging.INFO
        log.log(level, "%s", alert_line(name, t))  # the JSON record goes to the JSONL log, below
        if self.jsonlog is not None:
            self.jsonlog.write({"event": f"alert_{t.kind}", "level": "WARNING" if t.kind == "fired" else "INFO",
                                      **payload})
        signal = signals.alert_fired if t.kind == "fired" else signals.alert_resolved
        signal.send(app, rollout=name, rule=t.rule.name, severity=t.rule.severity, values=_plain(t.values),
                    action=t.rule.action, description=t.rule.description, sev=payload["sev"],
                    response=payload["response"], applied=payload.get("applied"))
        self.notifications.route({"event": f"alert_{t.kind}", **payload}, t.rule.notify)

    def _rule_rollback(self, name: str, rules: list[Rule], snap: FlagSnapshot,
                       named: Mapping[str, Value]) -> dict[str, Any] | None:
        """Apply the lowest rollback the firing rules ask for, conditional on the flags version read.

        ``previous`` is read from the audit, ``halve`` from the percentage read; a
        concurrent write is re-read and rolled back over (a rollback always wins). A write
        that fails outright (SQL down) leaves the rules firing, so the next evaluation tries
        again; once it lands the percentage change re-arms the rules.
        """
        current = snap.percentage
        rows = [r for r in self.store.audit(name, limit=500) if r["flag"] == PERCENTAGE]
        previous = percentage_before(((r["old_value"], r["new_value"]) for r in rows), current)
        rank = {s: i for i, s in enumerate(SEVERITIES)}
        target, _, _, rule, action = min((r.rollback.target(current, previous), rank[r.severity], i, r, r.rollback)
                                         for i, r in enumerate(rules) if r.rollback is not None)
        if target >= current:
            return None
        values = {m: named.get(m) for m in sorted(rule.condition.metrics)}
        incident = self.incident(rule.severity)
        reason = (f"{rule.name} ({incident.label} {rule.severity}): {action.describe()}, "
                  f"{current:g} → {target:g} % at flags v{snap.version}; {_values_text(_plain(values))}")
        applied = {"rule": rule.name, "from": current, "to": target, "flag_version": snap.version,
                   "enter_shadow": rule.enter_shadow if rule.enter_shadow is not None
                   else (target == 0 and self.flags.shadow_at_zero), "landed": False}
        try:
            made = self.flags.rollback(name, target, actor=AUTO_ROLLBACK_ACTOR, reason=reason[:MAX_REASON],
                                       enter_shadow=rule.enter_shadow, expected_version=snap.version)
        except SQLAlchemyError:
            log.exception("v2rollout: auto-rollback of %s could not be written; retrying at the next evaluation", name)
            return applied
        applied["landed"] = bool(made)
        return applied

    def _autopilot(self, name: str, now: float) -> dict[str, Any]:
        snap = self.store.read_fresh(name)
        stage, decision, matrix, line = self._decide(name, snap.values, now)
        last = line["last_change_at"]
        elapsed_ok = last is None or now - last >= self.watch_s
        action = autopilot_step(stage, decision, matrix, elapsed_ok, current_percentage=snap.percentage,
                                stages=self.stages)
        if action.kind == "advance" and self.windows is not None and not self.windows.is_open(now):
            opens = datetime.fromtimestamp(self.windows.next_open(now), UTC).isoformat()
            action = Action("hold", f"{action.reason}; outside the decision windows ({self.windows.text}): "
                                    f"next advance at {opens}")
        result = {"kind": action.kind, "reason": action.reason, "target": action.target_percentage, "at": now}
        if action.kind != "hold":
            self._apply(name, action, snap)
        self.last_actions[name] = result
        signals.autopilot_acted.send(self.app, rollout=name, action=action.kind, reason=action.reason,
                                     target=action.target_percentage)
        return result

    def _apply(self, name: str, action: Action, snap: FlagSnapshot) -> None:
        """A rollback always lands (re-read on conflict); an advance only on the flags it was decided from."""
        assert action.target_percentage is not None
        if action.kind == "rollback":
            self.flags.rollback(name, action.target_percentage, actor=AUTOPILOT_ACTOR, reason=action.reason,
                                expected_version=snap.version)
            return
        changes: dict[str, Any] = {PERCENTAGE: action.target_percentage}
        if action.stage is not None:
            changes[SHADOW] = action.stage.shadow
        try:
            self.flags.set_flags(name, changes, actor=AUTOPILOT_ACTOR, reason=action.reason,
                                 expected_version=snap.version)
        except ConflictError:
            log.info("v2rollout: autopilot did not advance %s: the flags changed since its gate was read", name)

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
            rule = self.rules[rule_name] if rule_name in self.rules else None
            out.append({
                "rollout": rollout, "rule": rule_name, "state": st.status, "since": st.since,
                "fired_at": st.fired_at, "evaluated_at": st.evaluated_at, "no_data": st.no_data,
                "severity": rule.severity if rule else None,
                "sev": self.incident(rule.severity).label if rule else None,
                "response": self.incident(rule.severity).response if rule else None,
                "rollback": rule.rollback.describe() if rule and rule.rollback else None,
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


class IntervalReport(TypedDict):
    """An anytime-valid interval a criterion read: which metric, its estimate and bounds."""

    metric: str
    point: float | None
    lower: float
    upper: float


class CriterionReport(TypedDict):
    name: str
    kind: str
    description: str
    value: float | None
    threshold: str | None
    verdict: str
    sample: float | None
    detail: str
    interval: IntervalReport | None


class HistoryPoint(TypedDict):
    at: float
    point: float | None
    lower: float | None
    upper: float | None


class GateHistory(TypedDict):
    """Each interval metric of the current gate at past times, cumulative from the stage start."""

    rollout: str
    stage: str
    entered_at: float
    now: float
    metrics: dict[str, list[HistoryPoint]]


class MatrixReport(TypedDict):
    severity: str
    action: str
    target_percentage: float | None
    signals: list[str]


class GateReport(TypedDict):
    """A gate decision as plain JSON-able data (API, CLI, dashboard)."""

    rollout: str
    #: the flags version the gate was read at: an advance writes only while it is current
    flag_version: int | None
    stage: str
    from_stage: str
    to_stage: str | None
    gate: str
    decision: str
    reasons: list[str]
    shoulds: dict[str, int]
    elapsed_s: float
    min_duration_s: float
    entered_at: float
    criteria: list[CriterionReport]
    latency_test: dict[str, Any] | None
    matrix: MatrixReport
    #: the earliest epoch second the autopilot may advance (minimum duration, watch interval, decision
    #: windows); None at the last stage. It advances then only if the gate says GO.
    next_advance_at: float | None
    #: whether now is inside a decision window (always true without V2ROLLOUT_DECISION_WINDOWS)
    decision_window_open: bool
    #: calculations and users of allow/deny-listed users in the stage, by arm (not in the gate's arms)
    targeted: dict[str, dict[str, int]]


def gate_report(name: str, stage: Stage, decision: GateDecision, matrix: Decision, line: Mapping[str, Any],
                upcoming: Stage | None, flag_version: int | None = None, *, next_advance_at: float | None = None,
                window_open: bool = True, targeted: Mapping[str, dict[str, int]] | None = None) -> GateReport:
    """A gate decision as plain JSON-able data; a criterion's threshold is its condition."""
    return {
        "rollout": name,
        "flag_version": flag_version,
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
                "value": r.value, "threshold": _threshold(r.criterion),
                "verdict": r.verdict, "sample": r.sample, "detail": r.detail,
                "interval": _interval_report(r.interval_metric, r.interval),
            }
            for r in decision.results
        ],
        "latency_test": dataclasses.asdict(decision.latency_test) if decision.latency_test else None,
        "matrix": {"severity": matrix.severity, "action": matrix.action, "target_percentage": matrix.target_percentage,
                   "signals": list(matrix.signals)},
        "next_advance_at": next_advance_at,
        "decision_window_open": window_open,
        "targeted": dict(targeted or {}),
    }


def _interval_report(metric: str | None, interval: Interval | None) -> IntervalReport | None:
    if metric is None or interval is None:
        return None
    return {"metric": metric, "point": interval.point, "lower": interval.lower, "upper": interval.upper}


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _threshold(c: Criterion) -> str | None:
    """What a criterion is judged on: its condition, or both sides of a pass/fail criterion (None: manual)."""
    if c.manual:
        return None
    return c.condition.text if c.fail_condition is None else f"pass: {c.condition.text}; fail: {c.fail_condition.text}"


def _plain(values: Mapping[str, Value]) -> dict[str, float | bool | None]:
    """Values as JSON numbers: an interval as its point estimate."""
    return {k: v.point if isinstance(v, Interval) else v for k, v in values.items()}


def _alert_window_start(line: Mapping[str, Any]) -> float | None:
    """Where the alert window starts after the last percentage change (None: no change yet).

    Counters are per minute. After a rollback the window starts at the next whole
    minute, so the calls that caused it are not read again; after a raise it starts
    at the change's own minute — v2's calls before it, at the lower percentage, are
    evidence about the same v2.
    """
    at = line.get("last_change_at")
    if at is None:
        return None
    return float(at) if line.get("last_change_lowered") else float(int(at // 60) * 60)


def _first_value(t: Transition) -> float | None:
    for value in t.values.values():
        if isinstance(value, (int, float)):
            return float(value)
    return None


def alert_line(name: str, t: Transition) -> str:
    """An alert transition as one line a person reads on stderr: no JSON, no escapes, no line breaks."""
    parts = [f"v2rollout alert {t.kind}: {name} {t.rule.name} ({t.rule.severity})", t.rule.description,
             _values_text(_plain(t.values)), f"action: {t.rule.action}" if t.rule.action else "", t.note]
    return " ".join(" — ".join(p for p in parts if p).split())


def _values_text(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, (int, float)) else f"{k}={v}" for k, v in values.items())


def _transition_dict(t: Transition) -> dict[str, Any]:
    return {"rule": t.rule.name, "severity": t.rule.severity, "kind": t.kind, "at": t.at, "values": _plain(t.values),
            "description": t.rule.description, "action": t.rule.action, "notify": list(t.rule.notify),
            "note": t.note}
