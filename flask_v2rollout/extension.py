"""The V2Rollout extension: registration, per-app state, assignment, calculate()."""
from __future__ import annotations

import atexit
import logging
import os
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from flask import Flask, current_app, g, has_request_context, request
from opentelemetry import _logs as otel_logs
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace
from sqlalchemy import Engine, create_engine, event

from . import signals
from .admin import register_admin
from .bucketing import assign, fine_bucket
from .compare import Comparator, Extractor, as_extractor, number_of
from .config import DEFAULTS
from .dispatch import Calculator, Outcome, qualified_name, run
from .errors import FlagError, GateError, RolloutError, UnknownRollout
from .decisions.evaluator import Evaluator, GateReport
from .flags import FLAG_NAMES, PERCENTAGE, RUNBOOK_DEFAULTS, SHADOW, FlagChange, FlagSnapshot, FlagStore, validate_flags
from .identity import UserLoader, resolve_user_id
from .jsonlog import JsonlLog
from .metrics.store import Flusher, MetricStore
from .metrics.recorder import Recorder, parse_window
from .models import checks_table
from .shadow import ShadowRunner, submit_shadow
from .telemetry import Telemetry
from .verify import run_checks

log = logging.getLogger("flask_v2rollout")

_G_KEY = "_v2rollout_assignments"


@dataclass(frozen=True)
class Rollout:
    """A registered migration of one calculation."""

    name: str
    v1: Calculator
    v2: Calculator
    compare: Comparator | None = None
    salt: str = ""
    subject: Callable[..., Any] | None = None
    extract: Extractor | None = None
    metadata: Callable[[Any], Mapping[str, Any]] | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    dual_run: bool = False
    #: offline validation figures (fractions): {"agreement_rate": 0.90, "fallback_rate": 0.125}
    offline: Mapping[str, float] = field(default_factory=dict)

    def subject_of(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str | None:
        if self.subject is None:
            return None
        label = self.subject(*args, **kwargs)
        return None if label is None else str(label)


@dataclass(frozen=True)
class Assignment:
    version: str
    user_id: str | None
    flags: FlagSnapshot


class _State:
    """Everything V2Rollout keeps for one app (``app.extensions["v2rollout"]``)."""

    def __init__(self, ext: "V2Rollout", app: Flask, db: Any) -> None:
        self.ext = ext
        self.app = app
        self.db = db
        self._engine: Engine | None = None
        cfg = app.config
        #: wall clock of this app's metrics, windows and gates (the testing kit replaces it)
        self.clock: Callable[[], float] = time.time
        #: versions pinned by the testing kit, whatever the flags say
        self.forced: dict[str, str] = {}
        self.recorder = Recorder(clock=lambda: self.clock(), slow_ms=float(cfg["V2ROLLOUT_SLOW_CALL_MS"]))
        self.store = FlagStore(
            self.engine,
            ttl=float(cfg["V2ROLLOUT_FLAG_TTL_S"]),
            defaults=self.defaults_for,
            create_tables=bool(cfg["V2ROLLOUT_CREATE_TABLES"]),
            error_log_interval=float(cfg["V2ROLLOUT_STORE_ERROR_LOG_INTERVAL_S"]),
            on_failure=lambda: self.recorder.db_failure("flags"),
            wall_clock=lambda: self.clock(),
        )
        self.app_defaults = _check_defaults(cfg["V2ROLLOUT_DEFAULTS"])
        self.use_login = bool(cfg["V2ROLLOUT_USE_FLASK_LOGIN"])
        self.session_key = str(cfg["V2ROLLOUT_SESSION_KEY"])
        log_file = cfg["V2ROLLOUT_LOG_FILE"]
        self.jsonlog = (
            JsonlLog(
                os.path.join(app.instance_path, log_file),
                max_bytes=int(cfg["V2ROLLOUT_LOG_MAX_BYTES"]),
                backups=int(cfg["V2ROLLOUT_LOG_BACKUPS"]),
                slow_ms=float(cfg["V2ROLLOUT_SLOW_CALL_MS"]),
            )
            if log_file
            else None
        )
        self.metric_store = MetricStore(
            self.engine, self.recorder, ensure_tables=self.store.ensure_tables,
            error_log_interval=float(cfg["V2ROLLOUT_STORE_ERROR_LOG_INTERVAL_S"]),
        )
        self.flusher = Flusher(
            self.metric_store,
            interval_s=float(cfg["V2ROLLOUT_METRICS_FLUSH_S"]),
            retention_days=float(cfg["V2ROLLOUT_METRICS_RETENTION_DAYS"]),
            probes=self.sample_probes,
            after_flush=self.after_flush,
            clock=lambda: self.clock(),
        )
        sample = float(cfg["V2ROLLOUT_SHADOW_SAMPLE"])
        if not 0.0 <= sample <= 1.0:
            raise RuntimeError("V2ROLLOUT_SHADOW_SAMPLE must be between 0 and 1")
        self.shadow_threshold = round(sample * 10_000)
        self.shadow = ShadowRunner(
            workers=int(cfg["V2ROLLOUT_SHADOW_WORKERS"]),
            queue_size=int(cfg["V2ROLLOUT_SHADOW_QUEUE_SIZE"]),
            timeout_s=float(cfg["V2ROLLOUT_SHADOW_TIMEOUT_MS"]) / 1000.0,
            shutdown_s=float(cfg["V2ROLLOUT_SHADOW_SHUTDOWN_S"]),
        )
        self.telemetry = Telemetry(
            enabled=bool(cfg["V2ROLLOUT_OTEL_ENABLED"]),
            include_user_id=bool(cfg["V2ROLLOUT_OTEL_INCLUDE_USER_ID"]),
            store=self.store, rollouts=ext._rollouts.keys, shadow=self.shadow,
            tracer_provider=ext._tracer_provider, meter_provider=ext._meter_provider,
            logger_provider=ext._logger_provider,
        )
        self._sample_seq = 0
        self.evaluator = Evaluator(self)

    def sample_probes(self) -> dict[str, float | None]:
        """Every host probe's current value; a failing probe reads None (and is logged)."""
        values: dict[str, float | None] = {}
        with self.app.app_context():
            for name, probe in self.ext._probes.items():
                try:
                    value = probe()
                    values[name] = None if value is None else float(value)
                except Exception:
                    log.exception("v2rollout: probe %r failed", name)
                    values[name] = None
        return values

    def after_flush(self) -> None:
        """After a successful flush: evaluate alerts, gates and the autopilot when due."""
        self.evaluator.maybe_run()

    def shutdown(self) -> None:
        """At exit: let shadow work finish (bounded), then flush what was counted."""
        self.shadow.shutdown()
        self.metric_store.flush()

    def sampled(self, user_id: str | None) -> bool:
        """Shadow this call? A hash of (user, call number) — independent of the rollout bucket."""
        if self.shadow_threshold >= 10_000:
            return True
        if self.shadow_threshold <= 0:
            return False
        self._sample_seq += 1
        return fine_bucket(f"{user_id}#{self._sample_seq}", salt="v2rollout-shadow-sample") < self.shadow_threshold

    def defaults_for(self, name: str) -> dict[str, Any]:
        rollout = self.ext._rollouts.get(name)
        return {**RUNBOOK_DEFAULTS, **self.app_defaults, **(rollout.defaults if rollout else {})}

    def engine(self) -> Engine:
        """The SQL engine: the host's ``db`` unless a URI is configured, else our own."""
        if self._engine is None:
            uri = self.app.config["V2ROLLOUT_DATABASE_URI"]
            if uri is None and self.db is not None:
                with self.app.app_context():
                    self._engine = self.db.engine
            else:
                if uri is None:
                    os.makedirs(self.app.instance_path, exist_ok=True)
                    uri = "sqlite:///" + os.path.join(self.app.instance_path, "v2rollout.db")
                self._engine = _own_engine(uri)
            _dispose_after_fork(self._engine)
        return self._engine


def _check_defaults(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise RuntimeError("V2ROLLOUT_DEFAULTS must be a mapping of flag name to value")
    try:
        return validate_flags(value) if value else {}
    except FlagError as exc:
        raise RuntimeError(f"V2ROLLOUT_DEFAULTS: {exc}") from None


def _own_engine(uri: str) -> Engine:
    if uri.startswith("sqlite"):
        engine = create_engine(uri, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(uri, pool_pre_ping=True)


def _at_fork_and_exit(state: _State) -> None:
    """A forked child starts with empty counters; every process flushes at exit."""
    ref = weakref.ref(state)

    def _child() -> None:
        alive = ref()
        if alive is not None:
            alive.recorder.reset()

    def _exit() -> None:
        alive = ref()
        if alive is not None:
            alive.shutdown()

    os.register_at_fork(after_in_child=_child)
    atexit.register(_exit)


def _dispose_after_fork(engine: Engine) -> None:
    """A forked worker must not reuse its parent's pooled connections."""
    ref = weakref.ref(engine)

    def _after_fork() -> None:
        eng = ref()
        if eng is not None:
            eng.dispose(close=False)

    os.register_at_fork(after_in_child=_after_fork)


class V2Rollout:
    """Roll a calculation from v1 to v2 per user, with flags kept in SQL.

    Rollouts registered on this object are served by every app it is
    initialised on; each app keeps its own flags store, engine and log.
    """

    def __init__(
        self, app: Flask | None = None, *, db: Any = None,
        tracer_provider: otel_trace.TracerProvider | None = None,
        meter_provider: otel_metrics.MeterProvider | None = None,
        logger_provider: otel_logs.LoggerProvider | None = None,
    ) -> None:
        """The OpenTelemetry providers serve every app of this object; ``None``: the globals, resolved lazily."""
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._logger_provider = logger_provider
        self._rollouts: dict[str, Rollout] = {}
        self._user_loader: UserLoader | None = None
        self._admin_required: Callable[[], Any] | None = None
        self._probes: dict[str, Callable[[], Any]] = {}
        self._verify_checks: dict[str, Callable[[], Any]] = {}
        self._states: "weakref.WeakSet[Flask]" = weakref.WeakSet()
        if app is not None:
            self.init_app(app, db=db)

    # -- setup ----------------------------------------------------------------
    def init_app(self, app: Flask, *, db: Any = None) -> None:
        """Register on ``app``: config defaults, per-app state, the assignment hook."""
        if "v2rollout" in app.extensions:
            raise RuntimeError("V2Rollout is already initialised on this app.")
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        state = _State(self, app, db)
        app.extensions["v2rollout"] = state
        for name in self._rollouts:
            state.store.add_rollout(name)
        app.before_request(self._assign_request)
        register_admin(app)
        self._states.add(app)
        _at_fork_and_exit(state)

    def register(
        self,
        name: str,
        *,
        v1: Calculator,
        v2: Calculator,
        compare: Comparator | None = None,
        salt: str = "",
        subject: Callable[..., Any] | None = None,
        extract: str | Extractor | None = None,
        metadata: Callable[[Any], Mapping[str, Any]] | None = None,
        defaults: Mapping[str, Any] | None = None,
        dual_run: bool = False,
        offline: Mapping[str, float] | None = None,
    ) -> Rollout:
        """Register a rollout.

        ``subject`` gets the calculator's arguments and returns the label
        logged with each call (e.g. the player); ``extract`` (a key path like
        ``"edges.0.edge"`` or a callable) finds the compared number in a value;
        ``compare(v1_value, v2_value)`` replaces the default agreement classes;
        ``metadata`` maps a value to the log record's metadata; ``defaults``
        are this rollout's initial flags; ``dual_run`` also runs v1 off the
        path for v2-served calls, so agreement is measured at 50 % and 100 %;
        ``offline`` gives the offline validation's ``agreement_rate`` and
        ``fallback_rate`` (fractions) that the shadow gate compares with.
        """
        if not isinstance(name, str) or not name or len(name) > 100:
            raise ValueError("rollout name must be a non-empty string of at most 100 characters")
        if name in self._rollouts:
            raise ValueError(f"rollout {name!r} is already registered")
        if not callable(v1) or not callable(v2):
            raise TypeError("v1 and v2 must be callables")
        try:
            checked = validate_flags(defaults) if defaults else {}
        except FlagError as exc:
            raise ValueError(f"defaults of rollout {name!r}: {exc}") from None
        known_offline = {"agreement_rate", "fallback_rate"}
        if offline is not None and (set(offline) - known_offline or not all(
                isinstance(v, (int, float)) and 0 <= v <= 1 for v in offline.values())):
            raise ValueError(f"offline of rollout {name!r} takes fractions 0–1 for {sorted(known_offline)}")
        rollout = Rollout(
            name, v1, v2, compare, str(salt), subject, as_extractor(extract), metadata, checked, bool(dual_run),
            dict(offline or {}),
        )
        self._rollouts[name] = rollout
        for app in list(self._states):
            app.extensions["v2rollout"].store.add_rollout(name)
        return rollout

    def user_loader(self, func: UserLoader) -> UserLoader:
        """Decorator: ``func()`` returns the current user's id (or ``None`` for anonymous)."""
        self._user_loader = func
        return func

    def admin_required(self, func: Callable[[], Any]) -> Callable[[], Any]:
        """Decorator: ``func()`` returns the admin actor for the current request, or ``None`` to refuse.

        Opens the admin blueprint (closed until this or ``V2ROLLOUT_ADMIN_TOKEN`` is set);
        what it returns is recorded as the actor of every change made through it.
        """
        self._admin_required = func
        return func

    # -- lookups ----------------------------------------------------------------
    @property
    def rollouts(self) -> Mapping[str, Rollout]:
        return dict(self._rollouts)

    def _state(self) -> _State:
        try:
            return current_app.extensions["v2rollout"]
        except RuntimeError:
            raise RuntimeError(
                "Working outside of an application context: V2Rollout needs the app. "
                "Use `with app.app_context():`."
            ) from None
        except KeyError:
            raise RuntimeError(
                "V2Rollout is not initialised on the current app. Call rollout.init_app(app)."
            ) from None

    def _rollout(self, name: str) -> Rollout:
        try:
            return self._rollouts[name]
        except KeyError:
            raise UnknownRollout(name, list(self._rollouts)) from None

    # -- request path -------------------------------------------------------------
    def _assign_request(self) -> None:
        if request.blueprint is not None and request.blueprint.partition(".")[0] == "v2rollout":
            return  # the admin surface serves operators, not rollout users
        state = self._state()
        try:
            uid = resolve_user_id(self._user_loader, use_login=state.use_login, session_key=state.session_key)
        except Exception:
            log.exception("v2rollout: user loader failed; serving v1 to this request")
            uid = None
        assignments = {}
        for rollout in self._rollouts.values():
            assignments[rollout.name] = self._assignment(state, rollout, uid)
        setattr(g, _G_KEY, assignments)

    def _assignment(self, state: _State, rollout: Rollout, uid: str | None) -> Assignment:
        snap = state.store.get(rollout.name)
        if state.forced and rollout.name in state.forced:
            version = state.forced[rollout.name]
        else:
            version = assign(uid, snap.percentage, rollout.salt) if uid is not None else "v1"
        if signals.version_assigned.receivers:
            signals.version_assigned.send(
                state.app, rollout=rollout.name, user_id=uid, version=version, percentage=snap.percentage
            )
        return Assignment(version, uid, snap)

    def _current_assignment(self, state: _State, rollout: Rollout) -> Assignment:
        assignments = g.get(_G_KEY)
        if assignments is None or rollout.name not in assignments:
            self._assign_request()
            assignments = g.get(_G_KEY)
        return assignments[rollout.name]

    def current_version(self, name: str) -> str:
        """``"v1"`` or ``"v2"``: the version assigned to this request's user."""
        rollout = self._rollout(name)
        if not has_request_context():
            raise RuntimeError("current_version() needs a request; outside one use calculate(..., user_id=…)")
        return self._current_assignment(self._state(), rollout).version

    def calculate(self, name: str, *args: Any, user_id: Any = None, **kwargs: Any) -> Outcome:
        """Run the rollout for the current user (or ``user_id``) and return the Outcome.

        ``user_id`` is reserved for this purpose and never passed to the calculators.
        """
        state = self._state()
        rollout = self._rollout(name)
        if user_id is not None:
            assignment = self._assignment(state, rollout, str(user_id))
        elif has_request_context():
            assignment = self._current_assignment(state, rollout)
        else:
            raise RuntimeError("calculate() outside a request needs user_id=…")
        flags = assignment.flags
        outcome = state.telemetry.calculate(name, flags, lambda: run(
            name, rollout.v1, rollout.v2, assignment.version, flags.fallback, args, kwargs, assignment.user_id
        ))
        self._record(state, rollout, flags, outcome, args, kwargs)
        if outcome.raised is not None:
            raise outcome.raised
        return outcome

    def _record(
        self, state: _State, rollout: Rollout, flags: FlagSnapshot, outcome: Outcome,
        args: tuple[Any, ...], kwargs: Mapping[str, Any],
    ) -> None:
        """Count, log and signal one call; hand the other version to the shadow runner."""
        state.flusher.ensure_started()
        raised = outcome.raised
        subject = rollout.subject_of(args, kwargs)
        state.recorder.calculation(
            outcome, subject=subject, unhandled=None if raised is None else qualified_name(raised)
        )
        if flags.monitoring and state.jsonlog is not None:
            meta = dict(rollout.metadata(outcome.value)) if rollout.metadata and raised is None else None
            state.jsonlog.calculation(
                outcome, subject=subject, number=number_of(rollout.extract, outcome.value), metadata=meta,
            )
        if raised is not None:
            return
        if outcome.fallback_reason is not None and signals.fallback_used.receivers:
            signals.fallback_used.send(state.app, rollout=rollout.name, reason=outcome.fallback_reason, outcome=outcome)
        if signals.calculation_completed.receivers:
            signals.calculation_completed.send(state.app, rollout=rollout.name, outcome=outcome)
        if outcome.assigned == "v1":
            if flags.shadow and state.sampled(outcome.user_id):
                submit_shadow(state, rollout, "v2", outcome, args, kwargs, subject, flags.monitoring)
        elif rollout.dual_run and outcome.version == "v2" and state.sampled(outcome.user_id):
            submit_shadow(state, rollout, "v1", outcome, args, kwargs, subject, flags.monitoring)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for this app's queued shadow work (tests, graceful shutdown); True if all done."""
        return self._state().shadow.drain(timeout)

    def probe(self, name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
        """Decorator: a host data-quality probe returning a number (or None), sampled at each flush."""
        def decorator(func: Callable[[], Any]) -> Callable[[], Any]:
            self._probes[name] = func
            return func
        return decorator

    def flush(self) -> bool:
        """Write this process's pending metrics (and probe samples) to SQL now; False if SQL failed (data kept)."""
        return self._state().flusher.cycle(hooks=False)

    def metrics(self, name: str, window: str | int = "5m", *, now: float | None = None) -> dict[str, Any]:
        """Merged figures of every process over a window (``"5m"``, ``"24h"`` or seconds)."""
        self._rollout(name)
        seconds = window if isinstance(window, int) else parse_window(window)
        state = self._state()
        return state.metric_store.window(name, seconds, now=state.clock() if now is None else now)

    def series(self, name: str, window: str | int = "1h", *, now: float | None = None) -> list[dict[str, Any]]:
        """Per-minute figures over a window, for charts."""
        self._rollout(name)
        seconds = window if isinstance(window, int) else parse_window(window)
        state = self._state()
        return state.metric_store.series(name, seconds, now=state.clock() if now is None else now)

    def stats(self, name: str) -> dict[str, dict[str, dict[str, float]]]:
        """This process's lifetime counters for a rollout: ``{arm: {metric: {key: value}}}``."""
        self._rollout(name)
        return self._state().recorder.local(name)

    def track_conversion(self, name: str) -> None:
        """Record a business conversion for the current request's user."""
        rollout = self._rollout(name)
        state = self._state()
        assignment = self._current_assignment(state, rollout)
        state.recorder.conversion(name, assignment.version, assignment.user_id)
        state.flusher.ensure_started()
        if signals.conversion_tracked.receivers:
            signals.conversion_tracked.send(
                state.app, rollout=name, user_id=assignment.user_id, version=assignment.version
            )

    # -- flags --------------------------------------------------------------------
    def flags(self, name: str, *, fresh: bool = False) -> dict[str, Any]:
        """The rollout's four flags (from the process cache unless ``fresh``)."""
        self._rollout(name)
        store = self._state().store
        return dict((store.read_fresh(name) if fresh else store.get(name)).values)

    def flag_state(self, name: str) -> dict[str, Any]:
        """Flags and their row version from one SQL read (for read-modify-write with ``expected_version``)."""
        self._rollout(name)
        snap = self._state().store.read_fresh(name)
        return {"flags": dict(snap.values), "version": snap.version}

    def flag_version(self, name: str) -> int:
        """The row version of the rollout's flags, for ``expected_version``."""
        self._rollout(name)
        version = self._state().store.read_fresh(name).version
        assert version is not None
        return version

    def set_flag(
        self, name: str, flag: str, value: Any, *, actor: str, reason: str | None = None,
        expected_version: int | None = None,
    ) -> list[FlagChange]:
        """Change one flag (validated, audited); see :meth:`set_flags`."""
        return self.set_flags(name, {flag: value}, actor=actor, reason=reason, expected_version=expected_version)

    def set_flags(
        self, name: str, changes: Mapping[str, Any], *, actor: str, reason: str | None = None,
        expected_version: int | None = None,
    ) -> list[FlagChange]:
        """Change several flags atomically; every change is audited and signalled.

        Raises ``UnknownRollout``, ``FlagError`` or ``ConflictError``; nothing is
        changed when any of them is raised.
        """
        self._rollout(name)
        state = self._state()
        made = state.store.set(name, changes, actor=actor, reason=reason, expected_version=expected_version)
        for change in made:
            signals.flag_changed.send(
                state.app, rollout=name, flag=change.flag, old=change.old, new=change.new,
                actor=change.actor, reason=change.reason,
            )
        return made

    def rollback(self, name: str, target: float = 0, *, actor: str, reason: str | None = None) -> list[FlagChange]:
        """Lower the rollout percentage to ``target`` (emergency: 0), audited."""
        current = self.flags(name, fresh=True)[PERCENTAGE]
        try:
            checked = validate_flags({PERCENTAGE: target})[PERCENTAGE]
        except FlagError as exc:
            raise FlagError(str(exc), field="target") from None
        if checked > current:
            raise FlagError(
                f"rollback target {checked:g} is above the current percentage {current:g}", field="target"
            )
        return self.set_flag(name, PERCENTAGE, checked, actor=actor, reason=reason)

    # -- gates, alerts, checks ------------------------------------------------------------------
    def gate(self, name: str) -> GateReport:
        """The current stage's gate: decision, every criterion, and the rollback matrix's verdict."""
        self._rollout(name)
        state = self._state()
        return state.evaluator.gate(name, state.clock())

    def status(self, name: str) -> dict[str, Any]:
        """Flags, stage, gate summary, active alerts and the autopilot's last word."""
        self._rollout(name)
        state = self._state()
        snap = state.store.read_fresh(name)
        gate = self.gate(name)
        return {
            "rollout": name, "flags": dict(snap.values), "flag_version": snap.version, "stage": gate["stage"],
            "gate": {k: gate[k] for k in ("gate", "decision", "reasons", "to_stage", "matrix")},
            "alerts": state.evaluator.alerts(name),
            "autopilot": state.evaluator.last_actions.get(name),
        }

    def advance(self, name: str, *, actor: str, reason: str | None = None) -> list[FlagChange]:
        """Move to the next stage when its gate says GO (audited); else ``GateError``."""
        gate = self.gate(name)
        if gate["decision"] != "GO":
            why = "; ".join(gate["reasons"][:3]) or "see the gate"
            raise GateError(f"gate {gate['gate']} is {gate['decision']}: {why}")
        if gate["to_stage"] is None:
            raise GateError(f"{name} is at the last stage ({gate['stage']})")
        stage = next(s for s in self._state().evaluator.stages if s.name == gate["to_stage"])
        return self.set_flags(name, {PERCENTAGE: stage.percentage, SHADOW: stage.shadow}, actor=actor,
                              reason=reason or f"gate {gate['gate']} GO")

    def evaluate(self) -> dict[str, Any] | None:
        """Evaluate alerts, auto-rollback and autopilot now (None: another process holds the lease)."""
        state = self._state()
        state.flusher.cycle(hooks=False)  # this process's counts and fresh probe samples first
        return state.evaluator.run()

    def send_test_alert(self, *, actor: str) -> None:
        """POST a test alert to the webhook, so operators see the channel work (pre-deployment checklist).

        Raises ``RolloutError`` when no webhook is configured or the delivery failed.
        """
        webhook = self._state().evaluator.webhook
        if webhook is None:
            raise RolloutError("no alert webhook is configured (V2ROLLOUT_WEBHOOK_URL)")
        payload = {"event": "alert_test", "rule": "test_alert", "severity": "LOW", "actor": actor,
                   "description": "test alert from Flask-V2Rollout", "at": self._state().clock()}
        if not webhook.send(payload):
            raise RolloutError(f"test alert not delivered to {webhook.url}; see the log for the error")

    def alerts(self, name: str | None = None) -> list[dict[str, Any]]:
        """Pending and firing alerts."""
        if name is not None:
            self._rollout(name)
        return self._state().evaluator.alerts(name)

    def alert_history(self, name: str | None = None, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Alert transitions (fired, resolved), newest first."""
        if name is not None:
            self._rollout(name)
        return self._state().evaluator.history(name, limit=limit, offset=offset)

    def record_check(self, name: str, check: str, passed: bool, *, actor: str, note: str | None = None) -> dict[str, Any]:
        """Record a manual gate criterion ("team_confident", …) with who and when."""
        self._rollout(name)
        manual_checks = self._state().evaluator.manual_checks
        if check not in manual_checks:
            raise FlagError(f"unknown check {check!r}; manual checks: {', '.join(manual_checks)}", field="check")
        if not isinstance(passed, bool):
            raise FlagError(f"passed must be true or false, got {passed!r}", field="passed")
        if not isinstance(actor, str) or not actor.strip():
            raise FlagError("actor is required", field="actor")
        if note is not None and (not isinstance(note, str) or len(note) > 2000):
            raise FlagError("note must be a string of at most 2000 characters", field="note")
        state = self._state()
        state.store.ensure_tables()
        row = {"rollout": name, "check": check, "passed": int(passed), "actor": actor, "note": note,
               "created_at": datetime.fromtimestamp(state.clock(), timezone.utc)}
        with state.engine().begin() as conn:
            conn.execute(checks_table.insert().values(**row))
        return {**row, "passed": passed, "created_at": row["created_at"].isoformat()}

    def checks(self, name: str) -> list[dict[str, Any]]:
        """Every manual check with its latest verdict in the current stage, who and when (``passed`` None:
        not recorded since the stage began — the gate counts only those)."""
        self._rollout(name)
        state = self._state()
        evaluator = state.evaluator
        now = state.clock()
        stage = evaluator.stage_of(state.store.read_fresh(name).values)
        recorded = evaluator.manual_records(name, since=evaluator.timeline(name, stage, now)["entered_at"])
        return [{"check": key, "description": text, "passed": None, "actor": None, "note": None, "at": None,
                 **recorded.get(key, {})} for key, text in evaluator.manual_checks.items()]

    def verify_check(self, name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
        """Decorator: a pre-deployment check for ``flask v2rollout verify``; returns (ok, detail) or a bool."""
        def decorator(func: Callable[[], Any]) -> Callable[[], Any]:
            self._verify_checks[name] = func
            return func
        return decorator

    def verify(self) -> list[dict[str, Any]]:
        """The pre-deployment checklist: built-in checks, then the host's; each PASS or FAIL with detail."""
        return run_checks(self._state(), self._verify_checks)

    def health(self) -> dict[str, Any]:
        """This process's view: flag store, metrics flush backlog, shadow queue."""
        state = self._state()
        store, metrics = state.store, state.metric_store
        return {
            "flag_store": {"healthy": store.healthy, "failures": store.failures, "last_error": store.last_error},
            "metrics": {"flush_failures": metrics.flush_failures, "backlog": metrics.backlog,
                        "last_error": metrics.last_error},
            "shadow": {"pending": state.shadow.pending},
        }

    def audit_count(self, name: str | None = None) -> int:
        """How many audited flag changes there are (of one rollout, or all)."""
        if name is not None:
            self._rollout(name)
        return self._state().store.audit_count(name)

    def audit(self, name: str | None = None, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Audited flag changes, newest first (of one rollout, or all)."""
        if name is not None:
            self._rollout(name)
        return self._state().store.audit(name, limit=limit, offset=offset)


__all__ = ["V2Rollout", "Rollout", "Assignment", "FLAG_NAMES"]
