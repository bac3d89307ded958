"""Every ``V2ROLLOUT_*`` configuration key with its default, in one place.

``V2Rollout.init_app`` applies these with ``app.config.setdefault``; the README
lists the same table for hosts.
"""
from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    # Storage: None means the host's Flask-SQLAlchemy ``db`` if given, else
    # ``sqlite:///<instance folder>/v2rollout.db``.
    "V2ROLLOUT_DATABASE_URI": None,
    # Create the v2rollout_* tables on first use (turn off when Alembic owns the schema).
    "V2ROLLOUT_CREATE_TABLES": True,
    # Initial flag values for a rollout seen for the first time (merged over the runbook's).
    "V2ROLLOUT_DEFAULTS": {},
    # Seconds a process serves flags from its cache before reading SQL again.
    "V2ROLLOUT_FLAG_TTL_S": 1.0,
    # Seconds between two log lines about a failing flag store.
    "V2ROLLOUT_STORE_ERROR_LOG_INTERVAL_S": 60.0,
    # Session key for the sticky anonymous user id.
    "V2ROLLOUT_SESSION_KEY": "v2rollout_uid",
    # Use Flask-Login's current_user when it is installed and no user_loader is set.
    "V2ROLLOUT_USE_FLASK_LOGIN": True,
    # JSONL calculation log (None: off); rotated at this size, keeping this many files.
    "V2ROLLOUT_LOG_FILE": None,
    "V2ROLLOUT_LOG_MAX_BYTES": 10 * 1024 * 1024,
    "V2ROLLOUT_LOG_BACKUPS": 5,
    # Calls slower than this get a warning line in the JSONL log (runbook: 500 ms).
    "V2ROLLOUT_SLOW_CALL_MS": 500.0,
    # Shadow runs (off the request path): worker threads, queue bound, per-run timeout,
    # share of eligible calls shadowed (0–1), seconds to drain at exit.
    "V2ROLLOUT_SHADOW_WORKERS": 2,
    "V2ROLLOUT_SHADOW_QUEUE_SIZE": 1000,
    "V2ROLLOUT_SHADOW_TIMEOUT_MS": 1000.0,
    "V2ROLLOUT_SHADOW_SAMPLE": 1.0,
    "V2ROLLOUT_SHADOW_SHUTDOWN_S": 5.0,
    # Metrics: seconds between flushes of each process's counters to SQL; days kept.
    "V2ROLLOUT_METRICS_FLUSH_S": 5.0,
    "V2ROLLOUT_METRICS_RETENTION_DAYS": 30.0,
    # Stages, gates and alerts (docs/operations.md). Minimum stage durations in seconds by stage
    # name, over the runbook's 24 h / 48 h / 72 h / 14 d; samples a criterion needs before it is judged.
    "V2ROLLOUT_STAGE_DURATIONS": {},
    "V2ROLLOUT_GATE_MIN_CALCULATIONS": 200,
    "V2ROLLOUT_GATE_MIN_USERS": 100,
    # The host's runbook overlay (YAML): changes or adds alert rules, gate criteria, stage durations,
    # matrix rows, probes and manual checks over the packaged rules/runbook.yaml (docs/operations.md).
    # None: the packaged runbook as it is. A broken file stops init_app with file, rule and column.
    "V2ROLLOUT_RUNBOOK_FILE": None,
    # Window the alert metrics are computed over, seconds.
    "V2ROLLOUT_ALERT_WINDOW_S": 300,
    # Seconds between evaluations (run after a metrics flush, under a SQL lease held this long).
    "V2ROLLOUT_EVALUATE_EVERY_S": 30.0,
    "V2ROLLOUT_LEASE_S": 30.0,
    # A CRITICAL alert rolls the rollout back to 0 % (once, audited as "auto-rollback").
    "V2ROLLOUT_AUTO_ROLLBACK": True,
    # Seconds the autopilot waits after a percentage change before its next step (runbook: 30 min).
    "V2ROLLOUT_WATCH_INTERVAL_S": 1800.0,
    # Alert webhook: JSON POST of every alert transition (None: off).
    "V2ROLLOUT_WEBHOOK_URL": None,
    "V2ROLLOUT_WEBHOOK_TIMEOUT_S": 5.0,
    "V2ROLLOUT_WEBHOOK_RETRIES": 2,
    # OpenTelemetry spans, evaluation events and metrics (docs/observability.md); user ids are sent as
    # feature_flag.context.id only when the host opts in (they are personal data).
    "V2ROLLOUT_OTEL_ENABLED": True,
    "V2ROLLOUT_OTEL_INCLUDE_USER_ID": False,
    # Admin blueprint (HTML dashboard + JSON API), closed until a token or
    # ``@rollout.admin_required`` is configured.
    "V2ROLLOUT_URL_PREFIX": "/v2rollout",
    # Bearer token for the admin API and the dashboard's sign-in form (None: no token).
    "V2ROLLOUT_ADMIN_TOKEN": None,
    # Actor recorded in the audit log for changes made with the token.
    "V2ROLLOUT_ADMIN_TOKEN_ACTOR": "token",
    # Seconds between refreshes of the dashboard's live panel (0: no refresh).
    "V2ROLLOUT_ADMIN_REFRESH_S": 15,
}
