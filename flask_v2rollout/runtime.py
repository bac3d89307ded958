"""The per-app runtime: builds and wires every part once, in one place.

``app.extensions["v2rollout"]`` is a :class:`Runtime`. Each part receives the
collaborators it uses — never the runtime, never the extension — so the parts
import nothing of this module and the wiring can be read here top to bottom.
"""
from __future__ import annotations

import atexit
import logging
import math
import os
import urllib.parse
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypedDict

from flask import Flask
from opentelemetry import _logs as otel_logs
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace
from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.exc import SQLAlchemyError

from . import signals
from .access import AccessStore, Limits
from .approvals import ApprovalStore
from .clock import Clock
from .decisions.evaluator import Evaluator
from .decisions.mail import Email
from .decisions.notify import Counters, Notifier, Router
from .decisions.pagerduty import PagerDuty
from .decisions.slack import Slack
from .decisions.webhook import Webhook
from .flags import PERCENTAGE, RUNBOOK_DEFAULTS, FlagService, FlagStore
from .journal import Journal
from .journal import Limits as JournalLimits
from .jsonlog import JsonlLog
from .metrics.inflight import InFlight
from .metrics.recorder import Recorder
from .metrics.store import Flusher, MetricStore
from .pipeline import Pipeline
from .registry import Probe, Registry, Rollout
from .settings import Settings
from .shadow import ShadowRunner
from .storefile import sqlite_path
from .telemetry import Telemetry
from .verify import Checklist

log = logging.getLogger("flask_v2rollout")


@dataclass(frozen=True)
class Providers:
    """OpenTelemetry providers injected into ``V2Rollout``; ``None``: the globals, resolved lazily."""

    tracer: otel_trace.TracerProvider | None = None
    meter: otel_metrics.MeterProvider | None = None
    logger: otel_logs.LoggerProvider | None = None


class EngineSource:
    """The SQL engine, made on first use: the host's ``db`` unless a URI is configured, else our own."""

    def __init__(self, app: Flask, db: Any, uri: str | None, settings: Settings) -> None:
        self._app = app
        self._db = db
        self._uri = uri
        self._settings = settings
        self._engine: Engine | None = None

    def __call__(self) -> Engine:
        if self._engine is None:
            if self._uri is None and self._db is not None:
                with self._app.app_context():
                    self._engine = self._db.engine
            else:
                uri = self._uri
                if uri is None:
                    os.makedirs(self._app.instance_path, exist_ok=True)
                    uri = "sqlite:///" + os.path.join(self._app.instance_path, "v2rollout.db")
                self._engine = _own_engine(uri, self._settings)
            _dispose_after_fork(self._engine)
        return self._engine


class Health(TypedDict):
    """This process's view of its own parts (``V2Rollout.health()``)."""

    flag_store: dict[str, Any]
    metrics: dict[str, Any]
    shadow: dict[str, Any]
    calls: dict[str, int]
    notifications: Counters
    journal: dict[str, Any]


class Runtime:
    """Everything the extension keeps for one app."""

    def __init__(self, app: Flask, registry: Registry, settings: Settings, *, db: Any, providers: Providers) -> None:
        self.app = app
        self.registry = registry
        self.settings = settings
        self.clock = Clock()
        self.engine = EngineSource(app, db, settings.database_uri, settings)
        self.recorder = Recorder(clock=self.clock, slow_ms=settings.slow_call_ms)
        self.store = FlagStore(
            self.engine, ttl=settings.flag_ttl_s, defaults=self.defaults_for, create_tables=settings.create_tables,
            error_log_interval=settings.store_error_log_interval_s,
            on_failure=partial(self.recorder.db_failure, "flags"), wall_clock=self.clock,
            read_budget_s=settings.flag_read_budget_ms / 1000.0, stall_s=_stall_after(settings),
        )
        self.approvals = ApprovalStore(
            self.engine, ensure_tables=self.store.ensure_tables, clock=self.clock,
            threshold=settings.approval_above, ttl_s=settings.approval_ttl_s,
        )
        self.flags = FlagService(self.store, sender=app, on_rollback=self._rolled_back,
                                 shadow_at_zero=settings.rollback_enters_shadow)
        self.access = AccessStore(
            self.engine, ensure_tables=self.store.ensure_tables, clock=self.clock,
            limits=Limits(settings.auth_window_s, settings.auth_address_failures, settings.auth_global_failures),
            idle_s=settings.admin_session_idle_s, lifetime_s=settings.admin_session_lifetime_s,
        )
        self.jsonlog = (
            JsonlLog(os.path.join(app.instance_path, settings.log_file), rotate_s=settings.log_rotate_s,
                     retention_s=settings.log_retention_h * 3600.0, max_bytes=settings.log_max_bytes,
                     slow_ms=settings.slow_call_ms, clock=self.clock, fields=self.log_fields)
            if settings.log_file else None
        )
        self.journal = Journal(
            self.engine, ensure_tables=self.store.ensure_tables, clock=self.clock, flush_s=settings.journal_flush_s,
            limits=JournalLimits(settings.journal_retention_h * 3600.0, settings.journal_max_comparisons,
                                 settings.journal_max_inputs, settings.journal_queue_size),
            error_log_interval=settings.store_error_log_interval_s,
        )
        self.metric_store = MetricStore(
            self.engine, self.recorder, ensure_tables=self.store.ensure_tables,
            error_log_interval=settings.store_error_log_interval_s,
        )
        self.shadow = ShadowRunner(
            workers=settings.shadow_workers, queue_size=settings.shadow_queue_size,
            timeout_s=settings.shadow_timeout_ms / 1000.0, shutdown_s=settings.shadow_shutdown_s,
        )
        self.telemetry = Telemetry(
            enabled=settings.otel_enabled, include_user_id=settings.otel_include_user_id, store=self.store,
            rollouts=registry.names, shadow=self.shadow, tracer_provider=providers.tracer,
            meter_provider=providers.meter, logger_provider=providers.logger, span_event=settings.otel_span_event,
        )
        self.notifications = Router(notifiers(settings), queue_size=settings.notify_queue_size)
        self.evaluator = Evaluator(
            app=app, settings=settings, rollouts=registry.rollouts, store=self.store,
            flags=self.flags, metric_store=self.metric_store, engine=self.engine, clock=self.clock,
            jsonlog=self.jsonlog, notifications=self.notifications,
        )
        self.in_flight = InFlight(slow_s=settings.slow_call_ms / 1000.0, on_hung=self.recorder.hung)
        self.flusher = Flusher(
            self.metric_store, interval_s=settings.metrics_flush_s, retention_days=settings.metrics_retention_days,
            probes=partial(sample_probes, app, registry.probes), after_flush=self.evaluator.maybe_run,
            before_flush=self._before_flush, clock=self.clock,
        )
        self.pipeline = Pipeline(
            app=app, registry=registry, store=self.store, recorder=self.recorder, telemetry=self.telemetry,
            jsonlog=self.jsonlog, shadow=self.shadow, in_flight=self.in_flight,
            on_activity=self.flusher.ensure_started, use_login=settings.use_flask_login,
            session_key=settings.session_key, shadow_sample=settings.shadow_sample, db_errors=settings.db_errors,
            deadline_workers=settings.deadline_workers, journal=self.journal,
            request_id_header=settings.request_id_header,
        )
        app.after_request(self.pipeline.record_response)
        app.teardown_request(self.pipeline.record_failure)
        self.checklist = Checklist(
            app=app, rollouts=registry.names, store=self.store, metric_store=self.metric_store,
            rule_count=self.evaluator.rule_count, engine=self.engine,
            jsonlog=self.jsonlog, admin_token=settings.admin_token,
        )
        registry.on_add(self.rollout_added)
        signals.flag_changed.connect(self._flag_changed, sender=app)
        _at_fork_and_exit(self)

    def _flag_changed(self, _sender: Any, *, rollout: str, flag: str, **_: Any) -> None:
        """A new percentage: users count anew from now (the sample-ratio check compares them with it)."""
        if flag != PERCENTAGE:
            return
        try:
            self.metric_store.restart_users(rollout, self.clock())
        except SQLAlchemyError as exc:  # the change landed; an unpruned user is counted once less, not lost
            self.metric_store.failed(exc)

    def _before_flush(self) -> None:
        """Count hung calls; hand the batched calculation durations to the OTel histogram."""
        self.in_flight.sweep()
        self.telemetry.record_durations()

    def _rolled_back(self, name: str, actor: str) -> None:
        cancelled = self.approvals.cancel_pending(name, actor)
        if cancelled:
            log.warning("v2rollout: rollback of %s by %s cancelled %d pending approval(s)", name, actor, cancelled)

    def rollout_added(self, rollout: Rollout) -> None:
        self.store.add_rollout(rollout.name)

    def log_fields(self, name: str) -> Mapping[str, str]:
        """The JSONL field names of rollout ``name`` (its ``log_fields``)."""
        rollout = self.registry.rollouts.get(name)
        return rollout.log_fields if rollout else {}

    def defaults_for(self, name: str) -> dict[str, Any]:
        """A new rollout's flags: the runbook's, then ``V2ROLLOUT_DEFAULTS``, then the rollout's own."""
        rollout = self.registry.rollouts.get(name)
        return {**RUNBOOK_DEFAULTS, **self.settings.defaults, **(rollout.defaults if rollout else {})}

    def use_telemetry(self, telemetry: Telemetry) -> Telemetry:
        """Swap the telemetry the request path uses (the testing kit's in-memory providers); returns the old one."""
        previous, self.telemetry = self.telemetry, telemetry
        self.pipeline.telemetry = telemetry
        return previous

    def health(self) -> Health:
        """This process's view: flag store, metrics flush backlog, shadow queue, notifications."""
        store, metrics = self.store, self.metric_store
        store.refresh_if_due()
        return {
            "flag_store": {"healthy": store.healthy, "failures": store.failures, "last_error": store.last_error},
            "metrics": {"flush_failures": metrics.flush_failures, "backlog": metrics.backlog,
                        "last_error": metrics.last_error, "quarantined": metrics.quarantined,
                        "last_quarantine": metrics.last_quarantine},
            "shadow": {"pending": self.shadow.pending},
            "calls": {"running": self.in_flight.running},
            "notifications": self.notifications.counters(),
            "journal": {"pending": self.journal.pending, "dropped": self.journal.dropped,
                        "last_error": self.journal.last_error},
        }

    def after_fork(self) -> None:
        """In a forked child: empty counters, no calls in flight (the parent's are not running here)."""
        self.recorder.reset()
        self.in_flight.reset()
        self.journal.after_fork()
        self.pipeline.after_fork()

    def shutdown(self) -> None:
        """At exit: let shadow work finish (bounded), flush what was counted, give queued alerts one deadline."""
        self.shadow.shutdown()
        self.journal.shutdown()
        self.metric_store.flush()
        if not self.notifications.drain(self.settings.notify_timeout_s):
            log.warning("v2rollout: %d alert notification(s) not delivered at exit",
                        self.notifications.counters()["pending"])


def notifiers(settings: Settings) -> list[Notifier]:
    """A notifier for each configured transport; the webhook first (it serves every channel)."""
    timeout_s, retries = settings.notify_timeout_s, settings.notify_retries
    made: list[Notifier] = []
    if settings.webhook_url:
        made.append(Webhook(
            settings.webhook_url, secret=settings.webhook_secret,
            timeout_s=timeout_s if settings.webhook_timeout_s is None else settings.webhook_timeout_s,
            retries=retries if settings.webhook_retries is None else settings.webhook_retries))
    if settings.slack_webhook_url:
        made.append(Slack(settings.slack_webhook_url, timeout_s=timeout_s, retries=retries))
    if settings.pagerduty_routing_key:
        made.append(PagerDuty(settings.pagerduty_routing_key, url=settings.pagerduty_url, timeout_s=timeout_s,
                              retries=retries))
    if settings.smtp_host:
        if not settings.smtp_to:
            raise RuntimeError("V2ROLLOUT_SMTP_TO must name at least one recipient when V2ROLLOUT_SMTP_HOST is set")
        made.append(Email(settings.smtp_host, settings.smtp_port, sender=settings.smtp_from,
                          recipients=settings.smtp_to, timeout_s=timeout_s, retries=retries,
                          starttls=settings.smtp_starttls, user=settings.smtp_user, password=settings.smtp_password))
    return made


def sample_probes(app: Flask, probes: Mapping[str, Probe]) -> dict[str, float | None]:
    """Every host probe's current value; a failing probe reads None (and is logged)."""
    values: dict[str, float | None] = {}
    with app.app_context():
        for name, probe in list(probes.items()):
            try:
                value = probe()
                values[name] = None if value is None else float(value)
            except Exception:
                log.exception("v2rollout: probe %r failed", name)
                values[name] = None
    return values


def _own_engine(uri: str, settings: Settings) -> Engine:
    """An engine that gives up instead of hanging: the flag refresh, metrics flush and writes all use it."""
    url = make_url(uri)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, settings)
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = max(2, math.ceil(settings.db_connect_timeout_s))
        if settings.db_statement_timeout_ms:
            given = url.query.get("options")
            options = f"-c statement_timeout={settings.db_statement_timeout_ms}"
            connect_args["options"] = f"{given} {options}" if isinstance(given, str) else options
        connect_args = {k: v for k, v in connect_args.items() if k == "options" or k not in url.query}
    return create_engine(url, pool_pre_ping=True, pool_timeout=settings.db_pool_timeout_s,
                         connect_args=connect_args)


def _sqlite_engine(url: URL, settings: Settings) -> Engine:
    """SQLite in WAL mode with a bounded busy wait; once the file has been opened, it is never created again.

    A pooled connection opened after the file was deleted would otherwise create a new, empty
    database at the same path (``mode=rw`` makes that connect fail instead).
    """
    path = sqlite_path(url)
    pooled = {} if path is None else {"pool_timeout": settings.db_pool_timeout_s}  # in-memory: one connection
    engine = create_engine(url, connect_args={"timeout": settings.sqlite_busy_timeout_s}, **pooled)
    opened = False

    @event.listens_for(engine, "do_connect")
    def _existing_file_only(_dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> None:
        if path is not None and opened and not cparams.get("uri"):
            cargs[:] = [f"file:{urllib.parse.quote(path)}?mode=rw"]
            cparams["uri"] = True

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
        nonlocal opened
        opened = True
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return engine


def _stall_after(settings: Settings) -> float:
    """A refresh still running after this long is a failure: longer than a live server can take to answer."""
    statement = max(settings.db_statement_timeout_ms / 1000.0, settings.sqlite_busy_timeout_s)
    return settings.db_connect_timeout_s + settings.db_pool_timeout_s + statement


def _weak_call(obj: Any, method: Callable[[Any], None]) -> Callable[[], None]:
    ref = weakref.ref(obj)

    def call() -> None:
        alive = ref()
        if alive is not None:
            method(alive)

    return call


def _at_fork_and_exit(runtime: Runtime) -> None:
    """A forked child starts with empty counters; every process flushes at exit."""
    os.register_at_fork(after_in_child=_weak_call(runtime, Runtime.after_fork))
    atexit.register(_weak_call(runtime, lambda r: r.shutdown()))


def _dispose_after_fork(engine: Engine) -> None:
    """A forked worker must not reuse its parent's pooled connections."""
    os.register_at_fork(after_in_child=_weak_call(engine, lambda e: e.dispose(close=False)))
