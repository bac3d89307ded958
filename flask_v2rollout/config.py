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
    # Admin blueprint.
    "V2ROLLOUT_URL_PREFIX": "/v2rollout",
}
