"""Every ``V2ROLLOUT_*`` configuration key: default, type and validation, read once per app.

``V2Rollout.init_app`` puts :data:`DEFAULTS` into ``app.config`` with ``setdefault``
and builds one frozen :class:`Settings` from it; nothing else reads ``app.config``.
A bad value fails ``init_app`` with a ``RuntimeError`` that names its key. The
README lists the same table for hosts.
"""
from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from .errors import FlagError
from .flags import validate_flags
from .rules.windows import DecisionWindows, parse_windows

PREFIX = "V2ROLLOUT_"
#: the shortest admin token ``init_app`` accepts
MIN_TOKEN = 16

log = logging.getLogger("flask_v2rollout")

Parser = Callable[[str, Any], Any]


def _fail(key: str, expected: str, value: Any) -> RuntimeError:
    shown = repr(value)
    return RuntimeError(f"{key} must be {expected}, got {shown[:80]}")


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, "True or False", value)
    return value


def _as_number(key: str, value: Any, what: str) -> float:
    """Numbers, and numeric strings (values read from the environment)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise _fail(key, what, value)
    try:
        return float(value)
    except ValueError:
        raise _fail(key, what, value) from None


def _number(low: float = 0.0, high: float = math.inf, *, what: str = "a number") -> Parser:
    def parse(key: str, value: Any) -> float:
        number = _as_number(key, value, what)
        if not (math.isfinite(number) and low <= number <= high):
            bounds = f"from {low:g} to {high:g}" if math.isfinite(high) else f"≥ {low:g}"
            raise _fail(key, f"{what} {bounds}", value)
        return number
    return parse


def _integer(low: int = 0) -> Parser:
    def parse(key: str, value: Any) -> int:
        what = f"a whole number ≥ {low}"
        number = _as_number(key, value, what)
        if not (number.is_integer() and number >= low):
            raise _fail(key, what, value)
        return int(number)
    return parse


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(key, "a string", value)
    return value


def _optional_text(key: str, value: Any) -> str | None:
    return None if value is None else _text(key, value)


def _admin_token(key: str, value: Any) -> str | None:
    """The token as configured; what is compared is :attr:`Settings.admin_secret` (stripped).

    A token read from a secret file often ends in a newline nobody can type: it is
    stripped with a warning instead of locking every operator out.
    """
    if value is None:
        return None
    token = _text(key, value)
    stripped = token.strip()
    if stripped != token:
        log.warning("v2rollout: %s has surrounding whitespace; it was stripped (fix the secret's source)", key)
    if len(stripped) < MIN_TOKEN:
        raise RuntimeError(f"{key} must be at least {MIN_TOKEN} characters (got {len(stripped)}); "
                           "generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return token


def _optional(parse: Parser) -> Parser:
    def parse_optional(key: str, value: Any) -> Any:
        return None if value is None else parse(key, value)
    return parse_optional


def _addresses(key: str, value: Any) -> tuple[str, ...]:
    """A list of strings, or one comma-separated string (from the environment)."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(a, str) for a in items):
        raise _fail(key, "a list of strings", value)
    return tuple(a.strip() for a in items if a.strip())


def _mapping(key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(key, "a mapping", value)
    return {str(k): v for k, v in value.items()}


def _seconds_by_name(key: str, value: Any) -> dict[str, float]:
    parse = _number(what="a number of seconds")
    return {name: parse(f"{key}[{name!r}]", seconds) for name, seconds in _mapping(key, value).items()}


def _flag_defaults(key: str, value: Any) -> dict[str, Any]:
    flags = _mapping(key, value)
    try:
        return validate_flags(flags) if flags else {}
    except FlagError as exc:
        raise RuntimeError(f"{key}: {exc}") from None


def _class_names(key: str, value: Any) -> frozenset[str]:
    """Exception classes, or their qualified names (``"sqlite3.OperationalError"``)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
        raise _fail(key, "a list of exception classes or qualified class names", value)
    names = set()
    for item in value:
        if isinstance(item, type) and issubclass(item, BaseException):
            names.add(item.__qualname__ if item.__module__ == "builtins" else f"{item.__module__}.{item.__qualname__}")
        elif isinstance(item, str) and item.strip():
            names.add(item.strip())
        else:
            raise _fail(key, "a list of exception classes or qualified class names", item)
    return frozenset(names)


def _windows(key: str, value: Any) -> DecisionWindows | None:
    if value is None:
        return None
    try:
        return parse_windows(value)
    except ValueError as exc:
        raise RuntimeError(f"{key}: {exc}") from None


#: the host database's connection failures, by the classes drivers and SQLAlchemy raise
DB_ERRORS = (
    "sqlalchemy.exc.OperationalError", "sqlalchemy.exc.InterfaceError", "sqlalchemy.exc.DisconnectionError",
    "sqlite3.OperationalError", "sqlite3.InterfaceError",
    "psycopg.OperationalError", "psycopg.InterfaceError", "psycopg2.OperationalError", "psycopg2.InterfaceError",
)


def _key(parse: Parser, default: Any, doc: str) -> Any:
    meta = {"parse": parse, "doc": doc}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


def _default(f: Field[Any]) -> Any:
    if f.default is MISSING:
        assert f.default_factory is not MISSING
        return f.default_factory()
    return f.default


SECONDS = _number(what="a number of seconds")
DEADLINE = _number(0.001, what="a number of seconds")


@dataclass(frozen=True)
class Settings:
    """The extension's configuration of one app; field ``x`` is key ``V2ROLLOUT_X``."""

    database_uri: str | None = _key(
        _optional_text, None,
        "SQLAlchemy URI of the extension's tables; None: the host's Flask-SQLAlchemy db if given, "
        "else sqlite:///<instance folder>/v2rollout.db")
    create_tables: bool = _key(_bool, True, "create the v2rollout_* tables on first use (off when Alembic owns them)")
    defaults: dict[str, Any] = _key(
        _flag_defaults, {}, "initial flag values for a rollout seen for the first time (over the runbook's)")
    flag_ttl_s: float = _key(SECONDS, 1.0, "seconds a process serves flags from its cache before reading SQL")
    flag_read_budget_ms: float = _key(
        _number(what="milliseconds"), 50.0,
        "before flags were ever loaded, how long a request waits for the first read (then: v1, shadow off); "
        "once loaded, requests never wait for SQL")
    db_connect_timeout_s: float = _key(
        _number(1.0, what="a number of seconds"), 2.0,
        "PostgreSQL connect_timeout of the extension's own engine (whole seconds, libpq: at least 2 used)")
    db_statement_timeout_ms: int = _key(
        _integer(0), 2000, "PostgreSQL statement_timeout of the extension's own engine (0: none)")
    db_pool_timeout_s: float = _key(
        SECONDS, 2.0, "seconds the extension's own engine waits for a free pooled connection")
    sqlite_busy_timeout_s: float = _key(
        SECONDS, 5.0, "seconds a statement of the extension's own SQLite engine waits for a lock")
    store_error_log_interval_s: float = _key(SECONDS, 60.0, "seconds between two log lines about a failing store")
    session_key: str = _key(_text, "v2rollout_uid", "session key of the sticky anonymous user id")
    use_flask_login: bool = _key(_bool, True, "use Flask-Login's current_user when no user_loader is set")
    log_file: str | None = _key(_optional_text, None, "JSONL calculation log in the instance folder (None: off)")
    log_max_bytes: int = _key(_integer(1), 1024 * 1024 * 1024, "rotate the JSONL log early at this size")
    log_rotate_s: float = _key(_number(1.0, what="a number of seconds"), 3600.0,
                               "seconds of JSONL records per rotated file")
    log_retention_h: float = _key(_number(1.0, what="a number of hours"), 48.0,
                                  "hours of rotated JSONL files kept (the runbook looks back 24 h)")
    request_id_header: str = _key(_text, "X-Request-Id", "request header whose id JSONL and SQL records carry")
    journal_flush_s: float = _key(_number(0.001, what="a number of seconds"), 2.0,
                                  "seconds between writes of shadow comparisons and recorded inputs to SQL")
    journal_retention_h: float = _key(_number(1.0, what="a number of hours"), 72.0,
                                      "hours of shadow comparisons and recorded inputs kept in SQL")
    journal_max_comparisons: int = _key(_integer(1), 200_000, "shadow comparisons kept in SQL per rollout")
    journal_max_inputs: int = _key(_integer(1), 10_000, "recorded inputs kept in SQL per rollout (record_inputs)")
    journal_queue_size: int = _key(_integer(1), 20_000, "rows waiting for the SQL writer (beyond: dropped, counted)")
    slow_call_ms: float = _key(_number(what="milliseconds"), 500.0, "calls slower than this are slow (runbook: 500)")
    shadow_workers: int = _key(_integer(1), 2, "shadow worker threads per process")
    shadow_queue_size: int = _key(_integer(1), 1000, "shadow jobs queued at most (beyond: dropped, counted)")
    shadow_timeout_ms: float = _key(_number(what="milliseconds"), 1000.0, "a shadow run is abandoned after this")
    shadow_sample: float = _key(_number(0.0, 1.0, what="a fraction"), 1.0, "share of eligible calls shadowed")
    shadow_shutdown_s: float = _key(SECONDS, 5.0, "seconds to drain shadow work at exit")
    metrics_flush_s: float = _key(_number(0.001, what="a number of seconds"), 5.0,
                                  "seconds between flushes of each process's counters to SQL")
    metrics_retention_days: float = _key(_number(what="a number of days"), 30.0, "days of metrics kept")
    stage_durations: dict[str, float] = _key(
        _seconds_by_name, {}, "minimum stage durations in seconds by stage name (over the runbook's)")
    gate_min_calculations: int = _key(_integer(0), 200, "calculations a criterion needs before it is judged")
    gate_min_users: int = _key(_integer(0), 100, "users per arm a conversion criterion needs")
    gate_alpha: float = _key(_number(0.0001, 0.5, what="a probability"), 0.05,
                             "error level of the gates' anytime-valid intervals (two-sided)")
    sequential_tuning: float = _key(_number(1.0, what="a number of observations"), 10_000.0,
                                    "observations (both arms) where the anytime-valid intervals are tightest")
    runbook_file: str | None = _key(
        _optional_text, None,
        "the host's runbook overlay (YAML) over the packaged rules/runbook.yaml: alert rules, gate criteria, "
        "stage durations, matrix rows, probes, manual checks; a broken file stops init_app")
    alert_min_calculations: int = _key(
        _integer(0), 20, "v2 calculations an alert rule's rates need in the alert window (a rule's min_sample wins)")
    alert_window_s: int = _key(_integer(1), 300, "seconds the alert metrics are computed over")
    evaluate_every_s: float = _key(SECONDS, 30.0, "seconds between evaluations (after a flush, under a lease)")
    lease_s: float = _key(_number(0.001, what="a number of seconds"), 30.0, "seconds the evaluation lease is held")
    auto_rollback: bool = _key(_bool, True, "a firing alert rule applies its rollback (CRITICAL: 0 % unless it says)")
    rollback_enters_shadow: bool = _key(_bool, True, "a rollback to 0 % turns shadow mode on (back to shadow mode)")
    decision_windows: DecisionWindows | None = _key(
        _windows, None, "when the autopilot may advance, e.g. 'Mon-Fri 09:00-17:00 Europe/London' (None: any time)")
    watch_interval_s: float = _key(SECONDS, 1800.0, "seconds the autopilot waits after a percentage change")
    notify_queue_size: int = _key(_integer(1), 1000, "alerts queued per notifier (beyond: dropped, counted)")
    notify_timeout_s: float = _key(DEADLINE, 5.0, "total seconds of one delivery attempt, however slow the server")
    notify_retries: int = _key(_integer(0), 2, "retries of a delivery (connection errors, timeouts, 429, 5xx)")
    webhook_url: str | None = _key(_optional_text, None, "JSON POST of every alert transition (None: off)")
    db_errors: frozenset[str] = _key(
        _class_names, frozenset(DB_ERRORS),
        "exceptions of either calculator counted as database connection failures (db_connection_failures)")
    deadline_workers: int = _key(_integer(1), 8, "threads per rollout that run v2 under its v2_timeout_ms deadline")
    webhook_secret: str | None = _key(_optional_text, None, "HMAC-SHA256 key signing webhook POSTs (None: unsigned)")
    webhook_timeout_s: float | None = _key(_optional(DEADLINE), None, "webhook deadline (None: NOTIFY_TIMEOUT_S)")
    webhook_retries: int | None = _key(_optional(_integer(0)), None, "webhook retries (None: NOTIFY_RETRIES)")
    slack_webhook_url: str | None = _key(_optional_text, None, "Slack incoming webhook (channel slack; None: off)")
    pagerduty_routing_key: str | None = _key(
        _optional_text, None, "PagerDuty Events API v2 routing key (channel pagerduty; None: off)")
    pagerduty_url: str = _key(_text, "https://events.pagerduty.com/v2/enqueue", "PagerDuty Events API v2 endpoint")
    smtp_host: str | None = _key(_optional_text, None, "SMTP server of the email channel (None: off)")
    smtp_port: int = _key(_integer(1), 587, "SMTP port")
    smtp_from: str = _key(_text, "flask-v2rollout@localhost", "sender address of alert mail")
    smtp_to: tuple[str, ...] = _key(_addresses, (), "recipients of alert mail (a list, or comma-separated)")
    smtp_user: str | None = _key(_optional_text, None, "SMTP login user (None: no login)")
    smtp_password: str | None = _key(_optional_text, None, "SMTP login password")
    smtp_starttls: bool = _key(_bool, True, "upgrade the SMTP connection with STARTTLS (certificate verified)")
    otel_enabled: bool = _key(_bool, True, "OpenTelemetry spans, events and metrics")
    otel_include_user_id: bool = _key(_bool, False, "send user ids as feature_flag.context.id (personal data)")
    otel_span_event: bool = _key(_bool, False, "also put the feature_flag.evaluation event on the calculation span")
    url_prefix: str = _key(_text, "/v2rollout", "where the admin blueprint is mounted")
    admin_token: str | None = _key(
        _admin_token, None, "Bearer token of the admin API and sign-in, at least 16 characters, surrounding "
        "whitespace stripped (None: none)")
    admin_token_actor: str = _key(_text, "token", "actor audited for changes made with the token")
    admin_refresh_s: float = _key(SECONDS, 15, "seconds between refreshes of the dashboard's live panel (0: off)")
    auth_window_s: float = _key(_number(1.0, what="a number of seconds"), 600.0,
                                "seconds over which refused admin credentials are counted")
    auth_address_failures: int = _key(
        _integer(1), 20, "refused credentials from one client address per window before it gets 429")
    auth_global_failures: int = _key(
        _integer(1), 200, "refused credentials from all addresses together per window before everyone gets 429")
    approval_above: float | None = _key(
        _optional(_number(0.0, 100.0, what="a percentage")), None,
        "raising a rollout above this percentage waits for a second approver (None: no approvals)")
    approval_ttl_s: float = _key(_number(1.0, what="a number of seconds"), 3600.0,
                                 "seconds a change waits for approval before it expires")
    admin_session_idle_s: float = _key(_number(1.0, what="a number of seconds"), 1800.0,
                                       "a dashboard sign-in unused this long is revoked")
    admin_session_lifetime_s: float = _key(_number(1.0, what="a number of seconds"), 43200.0,
                                           "a dashboard sign-in is revoked this long after it was made, used or not")

    @property
    def admin_secret(self) -> str | None:
        """The token that is compared: the configured one without surrounding whitespace."""
        return None if self.admin_token is None else self.admin_token.strip()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Cast and check every key; the first bad one raises ``RuntimeError`` naming it.

        An unknown ``V2ROLLOUT_*`` key is refused too: a misspelt setting would otherwise
        be ignored without a word.
        """
        unknown = sorted(k for k in config if isinstance(k, str) and k.startswith(PREFIX) and k not in DEFAULTS)
        if unknown:
            close = difflib.get_close_matches(unknown[0], DEFAULTS, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise RuntimeError(f"{unknown[0]} is not a Flask-V2Rollout setting{hint} (settings: docs/configuration.md)")
        values = {}
        for f in fields(cls):
            key = PREFIX + f.name.upper()
            values[f.name] = f.metadata["parse"](key, config[key] if key in config else _default(f))
        return cls(**values)


#: ``{key: default}`` for ``app.config.setdefault``.
DEFAULTS: dict[str, Any] = {PREFIX + f.name.upper(): _default(f) for f in fields(Settings)}
#: ``{key: what it does}`` (docs and the drift test).
DOCS: dict[str, str] = {PREFIX + f.name.upper(): f.metadata["doc"] for f in fields(Settings)}
