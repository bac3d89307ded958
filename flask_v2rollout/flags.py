"""FlagStore: the four runbook flags per rollout, typed, cached, audited.

Reads come from a per-process cache that a background thread refreshes from SQL
once the TTL has passed, so a change made by any process reaches every worker
within the TTL plus one read, and a request never waits for a slow or frozen
database. When SQL fails the store keeps serving the last-known flags (or safe
defaults: v1, shadow off), counts the failure and logs it once per interval; it
never raises on the read path. Writes are synchronous and optimistic:
``UPDATE … WHERE version = :seen``, and every changed flag gets an audit row in
the same transaction. A SQLite file deleted or replaced under the process makes
the store unhealthy and refuses writes (:class:`StoreFileError`).
"""
from __future__ import annotations

import contextvars
import decimal
import json
import logging
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

from . import signals
from .bucketing import threshold as fine_threshold
from .errors import ConflictError, FlagError, MissingTablesError, StoreFileError
from .failures import FailureLog
from .models import audit_table, flags_table, metadata
from .storefile import StoreFile, sqlite_path

log = logging.getLogger("flask_v2rollout.flags")

PERCENTAGE = "v2_rollout_percentage"
SHADOW = "v2_shadow_mode_enabled"
MONITORING = "v2_monitoring_enabled"
FALLBACK = "v2_fallback_enabled"
#: Not one of the runbook's four: lets the evaluator advance and roll back on its own.
AUTOPILOT = "v2_autopilot_enabled"
FLAG_NAMES = (PERCENTAGE, SHADOW, MONITORING, FALLBACK, AUTOPILOT)

#: Initial values before ``V2ROLLOUT_DEFAULTS`` and per-rollout defaults are applied.
RUNBOOK_DEFAULTS: dict[str, Any] = {
    PERCENTAGE: 0.0,
    SHADOW: False,
    MONITORING: True,
    FALLBACK: True,
    AUTOPILOT: False,
}

#: Served when SQL has never answered: everyone on v1, no shadow work.
SAFE_FLAGS: dict[str, Any] = dict(RUNBOOK_DEFAULTS)

#: The longest text stored with a change, per field: checked before any SQL, so SQLite (which would store
#: anything) and PostgreSQL (which would raise) refuse the same input the same way.
MAX_ACTOR = 200
#: CREATE TABLE attempts when other processes create the same tables at the same time
SCHEMA_ATTEMPTS = 5
MAX_REASON = 1000
MAX_NOTE = 2000
#: a number as an operator types it: ASCII digits only (no ``1_0``, no other scripts' digits)
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")


def validate_text(value: Any, field: str, limit: int, *, required: bool = False) -> str | None:
    """Text stored in the audit (actor, reason, note): storable in any database and at most ``limit`` characters."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise FlagError(f"{field} is required" if required else f"{field} must be a string", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: undecodable bytes on a command line, "\ud800" in JSON
        raise FlagError(f"{field} contains characters that cannot be stored (not valid UTF-8)", field=field) from None
    if any((ord(c) < 32 and c not in "\t\n\r") or 127 <= ord(c) < 160 for c in value):
        raise FlagError(f"{field} contains control characters", field=field)
    if len(value) > limit:
        raise FlagError(f"{field} must be at most {limit} characters (got {len(value)})", field=field)
    return value


def validate_flag(flag: str, value: Any) -> Any:
    """Return ``value`` in its canonical type, or raise :class:`FlagError` saying why."""
    if flag not in FLAG_NAMES:
        raise FlagError(
            f"unknown flag {flag!r}; valid flags: {', '.join(FLAG_NAMES)}", field="flag"
        )
    if flag == PERCENTAGE:
        return _validate_percentage(value)
    if not isinstance(value, bool):
        raise FlagError(
            f"{flag} must be a boolean (true or false), got {value!r}", field=flag
        )
    return value


def _validate_percentage(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, decimal.Decimal)):
        raise FlagError(
            f"{PERCENTAGE} must be a number from 0 to 100, got {value!r}", field=PERCENTAGE
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise FlagError(f"{PERCENTAGE} must be a finite number, got {value!r}", field=PERCENTAGE)
    exact = decimal.Decimal(str(value)) if not isinstance(value, decimal.Decimal) else value
    if not exact.is_finite():
        raise FlagError(f"{PERCENTAGE} must be a finite number, got {value!r}", field=PERCENTAGE)
    if exact < 0 or exact > 100:
        raise FlagError(f"{PERCENTAGE} must be between 0 and 100, got {value!r}", field=PERCENTAGE)
    if exact != exact.quantize(decimal.Decimal("0.01"), rounding=decimal.ROUND_DOWN):
        raise FlagError(
            f"{PERCENTAGE} allows at most 2 decimals, got {value!r}", field=PERCENTAGE
        )
    return float(exact) + 0.0  # -0 is 0


def parse_flag_text(flag: str, text: str) -> Any:
    """Parse a flag value typed by an operator (CLI): ``true``/``false`` or a number."""
    if flag not in FLAG_NAMES:
        return validate_flag(flag, text)
    raw = text.strip()
    if flag == PERCENTAGE:
        if not _NUMBER_TEXT.fullmatch(raw):
            what = "a finite number" if raw.lower().lstrip("+-") in ("nan", "inf", "infinity") else "a number"
            raise FlagError(f"{PERCENTAGE} must be {what} from 0 to 100 in ASCII digits, got {text[:40]!r}",
                            field=PERCENTAGE)
        return validate_flag(flag, decimal.Decimal(raw))
    lowered = raw.lower()
    if lowered not in ("true", "false"):
        raise FlagError(f"{flag} must be true or false, got {text!r}", field=flag)
    return lowered == "true"


def validate_flags(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Validate every entry of ``changes``; all or nothing."""
    if not isinstance(changes, Mapping) or not changes:
        raise FlagError("give at least one flag to change", field="flags")
    return {str(k): validate_flag(k, v) for k, v in changes.items()}


@dataclass(frozen=True)
class FlagSnapshot:
    """Flags of one rollout as read at one moment, with their row version.

    The typed values are worked out once per snapshot: every ``calculate()`` reads them.
    """

    values: Mapping[str, Any]
    version: int | None
    stale: bool = False
    percentage: float = field(init=False, repr=False, compare=False)
    #: the percentage as a fine-bucket threshold (``bucketing.threshold``)
    threshold: int = field(init=False, repr=False, compare=False)
    shadow: bool = field(init=False, repr=False, compare=False)
    monitoring: bool = field(init=False, repr=False, compare=False)
    fallback: bool = field(init=False, repr=False, compare=False)
    autopilot: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        values, put = self.values, object.__setattr__
        put(self, "percentage", float(values[PERCENTAGE]))
        put(self, "threshold", fine_threshold(self.percentage))
        for name, key in (("shadow", SHADOW), ("monitoring", MONITORING), ("fallback", FALLBACK),
                          ("autopilot", AUTOPILOT)):
            put(self, name, bool(values[key]))


@dataclass(frozen=True)
class FlagChange:
    rollout: str
    flag: str
    old: Any
    new: Any
    actor: str
    reason: str | None


@dataclass
class _Cache:
    snapshots: dict[str, FlagSnapshot] = field(default_factory=dict)
    loaded_at: float = float("-inf")
    ever_loaded: bool = False


@dataclass
class _Refresh:
    """One background refresh; ``pid`` tells a forked child that it is its parent's, not its own."""

    pid: int
    started: float
    done: threading.Event = field(default_factory=threading.Event)
    stalled: bool = False


class FlagStore:
    """Per-app flag store over SQL with a per-process TTL cache, revalidated off the request path.

    :meth:`get` never waits for SQL once flags were loaded: a snapshot older than the TTL is still
    served while one background thread per process reads the new one (stale-while-revalidate).
    Until the first load succeeds, the call that starts a refresh waits for it at most
    ``read_budget_s``, then serves the safe defaults. A refresh still running after ``stall_s`` is
    counted as a failure (a frozen database answers nothing, not even an error).
    """

    def __init__(
        self,
        engine: Callable[[], Engine],
        *,
        ttl: float,
        defaults: Callable[[str], dict[str, Any]],
        create_tables: bool = True,
        error_log_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        on_failure: Callable[[], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
        read_budget_s: float = 0.05,
        stall_s: float = 10.0,
    ) -> None:
        self._engine = engine
        self.ttl = ttl
        self.read_budget_s = read_budget_s
        self.stall_s = stall_s
        self._defaults = defaults
        self._create_tables = create_tables
        self._tables_ready = False
        self._file: StoreFile | None = None
        self._file_resolved = False
        self._failures = FailureLog(log, "flag store unavailable, serving last-known flags",
                                    interval_s=error_log_interval)
        self._clock = clock
        self._on_failure = on_failure
        self._wall_clock = wall_clock
        self._cache = _Cache()
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._inflight: _Refresh | None = None
        self._idle = threading.Condition()
        #: rollout -> sequence number of this process's last write of it (kept over a concurrent refresh)
        self._written: dict[str, int] = {}
        self._write_seq = 0
        self._healthy = True
        self._schema_lock = threading.Lock()
        #: background refreshes started by this process (tests read it)
        self.refreshes = 0
        _settle_at_fork(self)

    # -- schema -------------------------------------------------------------
    def ensure_tables(self) -> None:
        """Before any SQL: check the store file (SQLite) and create the v2rollout_* tables if missing.

        Raises :class:`StoreFileError` when the SQLite file is gone or was replaced, and
        :class:`MissingTablesError` when table creation is off and a table is not there
        (checked again on every call until the migration has run).
        """
        file = self._store_file()
        if file is not None:
            file.check()
        if self._tables_ready:
            return
        with self._schema_lock:  # one thread of this process creates; the others wait for it
            if not self._tables_ready:
                self._create_or_check()
                self._tables_ready = True
        if file is not None:
            file.check()  # records the identity of a file the first connect has just created

    def _create_or_check(self) -> None:
        if not self._create_tables:
            missing = sorted(set(metadata.tables) - set(inspect(self._engine()).get_table_names()))
            if missing:
                raise MissingTablesError(missing)
            return
        for attempt in range(SCHEMA_ATTEMPTS):
            try:
                metadata.create_all(self._engine(), checkfirst=True)
                return
            except (IntegrityError, ProgrammingError, OperationalError):
                # Another process created a table between our check and our CREATE: check again.
                if attempt == SCHEMA_ATTEMPTS - 1:
                    raise

    def _store_file(self) -> StoreFile | None:
        if not self._file_resolved:
            path = sqlite_path(self._engine().url)
            self._file = None if path is None else StoreFile(path)
            self._file_resolved = True
        return self._file

    def add_rollout(self, name: str) -> None:
        """Make ``name`` known; its row is created with defaults on the next refresh."""
        self._known.add(name)
        self._cache.loaded_at = float("-inf")

    # -- reads --------------------------------------------------------------
    def get(self, rollout: str) -> FlagSnapshot:
        """Flags of ``rollout`` from the cache — no SQL on this thread once loaded; never raises."""
        cache = self._cache
        if self._clock() - cache.loaded_at >= self.ttl:
            self._revalidate(first=not cache.ever_loaded)
            cache = self._cache
        snap = cache.snapshots.get(rollout)
        if snap is None:
            return FlagSnapshot(self._initial(rollout), None, stale=True)
        return snap

    def refresh_if_due(self) -> None:
        """Start a background refresh if the snapshot is older than the TTL; never waits.

        For health checks: an idle worker polled only for its health must notice that the store is back.
        """
        if self._clock() - self._cache.loaded_at >= self.ttl:
            self._revalidate(first=False)

    def _initial(self, rollout: str) -> dict[str, Any]:
        if self._cache.ever_loaded:
            return self._defaults(rollout)
        return dict(SAFE_FLAGS)

    def _running(self) -> _Refresh | None:
        """This process's refresh in flight (a parent's, inherited through fork, does not count)."""
        refresh = self._inflight
        if refresh is None or refresh.pid != os.getpid() or refresh.done.is_set():
            return None
        return refresh

    def _revalidate(self, *, first: bool) -> None:
        running = self._running()
        if running is not None:
            self._note_stall(running)
            return
        with self._lock:
            if self._running() is not None or self._clock() - self._cache.loaded_at < self.ttl:
                return  # another thread has just started or finished one
            refresh = self._inflight = _Refresh(os.getpid(), self._clock())
            self.refreshes += 1
        try:  # in the caller's context: an operator command's "existing store only" holds in the thread too
            threading.Thread(target=contextvars.copy_context().run, args=(self._run_refresh, refresh),
                             name="v2rollout-flag-refresh", daemon=True).start()
        except RuntimeError as exc:  # no new threads (interpreter shutting down)
            self._finish(refresh)
            self._record_failure(exc)
            return
        if first:
            refresh.done.wait(self.read_budget_s)

    def _note_stall(self, refresh: _Refresh) -> None:
        if refresh.stalled or self._clock() - refresh.started < self.stall_s:
            return
        with self._lock:  # another thread may have noted it meanwhile
            noted, refresh.stalled = refresh.stalled, True
        if not noted:
            self._record_failure(TimeoutError(self._stall_message(refresh)))

    def _stall_message(self, refresh: _Refresh) -> str:
        return f"flag refresh has not finished after {self._clock() - refresh.started:.1f} s"

    def _run_refresh(self, refresh: _Refresh) -> None:
        try:
            self._refresh(refresh)
        finally:
            self._finish(refresh)

    def _finish(self, refresh: _Refresh) -> None:
        with self._idle:
            refresh.done.set()
            self._idle.notify_all()

    def _before_fork(self) -> None:
        """A child forked mid-refresh could inherit SQLAlchemy's and SQLite's locks held; let it finish first."""
        self.wait_idle(self.stall_s)

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._schema_lock = threading.Lock()
        self._idle = threading.Condition()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no refresh of this process is running; False if one still is after ``timeout``."""
        with self._idle:
            return self._idle.wait_for(lambda: self._running() is None, timeout)

    def _refresh(self, refresh: _Refresh) -> None:
        seen_writes = self._write_seq
        try:
            snapshots = self._load()
        except SQLAlchemyError as exc:
            self._record_failure(exc)
            with self._lock:
                self._cache = _Cache(
                    {k: FlagSnapshot(v.values, v.version, stale=True) for k, v in self._cache.snapshots.items()},
                    self._clock(),
                    self._cache.ever_loaded,
                )
            return
        with self._lock:
            for name, seq in self._written.items():  # a write of ours landed after this read began
                mine = self._cache.snapshots.get(name)
                if seq > seen_writes and mine is not None and (mine.version or 0) > (snapshots[name].version or 0):
                    snapshots[name] = mine
            self._written = {k: v for k, v in self._written.items() if v > seen_writes}
            self._cache = _Cache(snapshots, self._clock(), True)
        self._healthy = True

    def _remember(self, rollout: str, snap: FlagSnapshot) -> None:
        """Serve this process's own write at once, whatever a refresh in flight read before it."""
        with self._lock:
            self._write_seq += 1
            self._written[rollout] = self._write_seq
            self._cache = _Cache({**self._cache.snapshots, rollout: snap}, self._cache.loaded_at,
                                 self._cache.ever_loaded)

    def _load(self) -> dict[str, FlagSnapshot]:
        self.ensure_tables()
        engine = self._engine()
        with engine.connect() as conn:
            rows = conn.execute(select(flags_table.c.rollout, flags_table.c.flags, flags_table.c.version)).all()
        found = {r.rollout: FlagSnapshot(self._decode(r.rollout, r.flags), r.version) for r in rows}
        missing = self._known - found.keys()
        for name in missing:
            found[name] = self._create(engine, name)
        return found

    def _decode(self, rollout: str, raw: str) -> dict[str, Any]:
        values = self._defaults(rollout)
        try:
            stored = json.loads(raw)
            for k in FLAG_NAMES:
                if k in stored:
                    values[k] = validate_flag(k, stored[k])
        except (ValueError, TypeError) as exc:
            log.error("v2rollout: flags of %r in SQL are invalid (%s); using defaults", rollout, exc)
        return values

    def _create(self, engine: Engine, name: str) -> FlagSnapshot:
        values = self._defaults(name)
        try:
            with engine.begin() as conn:
                conn.execute(
                    insert(flags_table).values(
                        rollout=name, flags=json.dumps(values, sort_keys=True), version=1,
                        created_at=self._now(), updated_at=self._now(), updated_by="init",
                    )
                )
        except IntegrityError:
            with engine.connect() as conn:
                row = conn.execute(
                    select(flags_table.c.flags, flags_table.c.version).where(flags_table.c.rollout == name)
                ).one()
            return FlagSnapshot(self._decode(name, row.flags), row.version)
        return FlagSnapshot(values, 1)

    def _record_failure(self, exc: Exception) -> None:
        self._failures.record(exc)
        self._healthy = False
        if self._on_failure is not None:
            self._on_failure()

    def _problem(self) -> str | None:
        """Why the store cannot be trusted right now, short of a failed refresh: file gone, refresh stalled."""
        file = self._file if self._file_resolved else None
        problem = file.problem() if file is not None else None
        if file is not None and problem is not None:
            return str(StoreFileError(file.path, problem))
        running = self._running()
        if running is not None and self._clock() - running.started >= self.stall_s:
            return f"TimeoutError: {self._stall_message(running)}"
        return None

    @property
    def healthy(self) -> bool:
        """False while the last refresh failed, a refresh hangs, or the SQLite file is gone or replaced."""
        return self._healthy and self._problem() is None

    @property
    def failures(self) -> int:
        return self._failures.count

    @property
    def last_error(self) -> str | None:
        return self._problem() or self._failures.last_error

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._wall_clock(), UTC)

    # -- writes -------------------------------------------------------------
    def set(
        self,
        rollout: str,
        changes: Mapping[str, Any],
        *,
        actor: str,
        reason: str | None = None,
        expected_version: int | None = None,
    ) -> list[FlagChange]:
        """Apply ``changes`` atomically; returns the changes made (empty if no value differs).

        Raises :class:`FlagError` for invalid input and :class:`ConflictError`
        when the row moved past ``expected_version`` (or past the version just
        read, when none is given). Nothing is written in either case.
        """
        new_values = validate_flags(changes)
        validate_text(actor, "actor", MAX_ACTOR, required=True)
        validate_text(reason, "reason", MAX_REASON)
        self.ensure_tables()
        engine = self._engine()
        if rollout in self._known:
            self._load_one(engine, rollout)
        with engine.begin() as conn:
            row = conn.execute(
                select(flags_table.c.flags, flags_table.c.version).where(flags_table.c.rollout == rollout)
            ).one()
            if expected_version is not None and row.version != expected_version:
                raise ConflictError(rollout, expected_version, row.version)
            current = self._decode(rollout, row.flags)
            diff = [FlagChange(rollout, k, current[k], v, actor, reason)
                    for k, v in new_values.items() if current[k] != v]
            if not diff:
                return []
            merged = {**current, **new_values}
            result = conn.execute(
                update(flags_table)
                .where(flags_table.c.rollout == rollout, flags_table.c.version == row.version)
                .values(
                    flags=json.dumps(merged, sort_keys=True), version=row.version + 1,
                    updated_at=self._now(), updated_by=actor,
                )
            )
            if result.rowcount != 1:
                actual = conn.execute(
                    select(flags_table.c.version).where(flags_table.c.rollout == rollout)
                ).scalar()
                raise ConflictError(rollout, row.version, actual)
            written = FlagSnapshot(merged, row.version + 1)
            now = self._now()
            conn.execute(
                insert(audit_table),
                [
                    {
                        "rollout": c.rollout, "flag": c.flag, "old_value": json.dumps(c.old),
                        "new_value": json.dumps(c.new), "actor": actor, "reason": reason,
                        "created_at": now,
                    }
                    for c in diff
                ],
            )
        self._remember(rollout, written)
        return diff

    def _load_one(self, engine: Engine, rollout: str) -> None:
        with engine.connect() as conn:
            exists = conn.execute(
                select(flags_table.c.version).where(flags_table.c.rollout == rollout)
            ).first()
        if exists is None:
            self._create(engine, rollout)

    def read_fresh(self, rollout: str) -> FlagSnapshot:
        """Flags straight from SQL (raises on failure): for operators, not requests."""
        self.ensure_tables()
        engine = self._engine()
        self._load_one(engine, rollout)
        with engine.connect() as conn:
            row = conn.execute(
                select(flags_table.c.flags, flags_table.c.version).where(flags_table.c.rollout == rollout)
            ).one()
        return FlagSnapshot(self._decode(rollout, row.flags), row.version)

    def created_at(self, rollout: str) -> float | None:
        """When the rollout's flags row was created (epoch seconds), if it exists."""
        self.ensure_tables()
        with self._engine().connect() as conn:
            value = conn.execute(
                select(flags_table.c.created_at).where(flags_table.c.rollout == rollout)
            ).scalar()
        return None if value is None else _aware(value).timestamp()

    # -- audit --------------------------------------------------------------
    def audit(self, rollout: str | None = None, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Audit rows, newest first."""
        self.ensure_tables()
        query = select(audit_table).order_by(audit_table.c.id.desc()).limit(limit).offset(offset)
        if rollout is not None:
            query = query.where(audit_table.c.rollout == rollout)
        with self._engine().connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            {
                "id": r["id"], "rollout": r["rollout"], "flag": r["flag"],
                "old_value": json.loads(r["old_value"]) if r["old_value"] is not None else None,
                "new_value": json.loads(r["new_value"]), "actor": r["actor"], "reason": r["reason"],
                "created_at": _iso(r["created_at"]),
                "at": _aware(r["created_at"]).timestamp(),
            }
            for r in rows
        ]

    def audit_count(self, rollout: str | None = None) -> int:
        self.ensure_tables()
        query = select(func.count()).select_from(audit_table)
        if rollout is not None:
            query = query.where(audit_table.c.rollout == rollout)
        with self._engine().connect() as conn:
            return int(conn.execute(query).scalar_one())


def _settle_at_fork(store: FlagStore) -> None:
    """gunicorn --preload forks right after the app's first read, which may still be running in its thread."""
    ref = weakref.ref(store)

    def before() -> None:
        alive = ref()
        if alive is not None:
            alive._before_fork()

    def after_in_child() -> None:
        alive = ref()
        if alive is not None:
            alive._after_fork_in_child()

    os.register_at_fork(before=before, after_in_child=after_in_child)


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes; everything stored is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _iso(value: datetime) -> str:
    return _aware(value).isoformat()


#: how often a rollback re-reads and retries before giving up on a storm of concurrent writes
ROLLBACK_ATTEMPTS = 50


class FlagService:
    """The one way flags are written: validated, audited, then signalled.

    The extension's public methods, the evaluator (auto-rollback, autopilot) and
    the admin blueprint all write through one of these, so every change is
    audited and announced the same way. ``sender`` is the app the signals name.
    """

    def __init__(self, store: FlagStore, *, sender: Any,
                 on_rollback: Callable[[str, str], None] | None = None, shadow_at_zero: bool = True) -> None:
        """``on_rollback(rollout, actor)`` runs after every rollback (it cancels pending approvals).

        ``shadow_at_zero`` (``V2ROLLOUT_ROLLBACK_ENTERS_SHADOW``): a rollback to 0 % turns shadow
        mode on unless its caller says otherwise — the runbook's "back to shadow mode", so the
        shadow gate has data again.
        """
        self.store = store
        self._sender = sender
        self._on_rollback = on_rollback
        self.shadow_at_zero = shadow_at_zero

    def set_flags(
        self, name: str, changes: Mapping[str, Any], *, actor: str, reason: str | None = None,
        expected_version: int | None = None,
    ) -> list[FlagChange]:
        """Change several flags atomically (``ConflictError`` if the version moved); then signal each change."""
        made = self.store.set(name, changes, actor=actor, reason=reason, expected_version=expected_version)
        for change in made:
            signals.flag_changed.send(
                self._sender, rollout=name, flag=change.flag, old=change.old, new=change.new,
                actor=change.actor, reason=change.reason,
            )
        return made

    def rollback(self, name: str, target: float = 0, *, actor: str, reason: str | None = None,
                 enter_shadow: bool | None = None, expected_version: int | None = None) -> list[FlagChange]:
        """Lower the percentage to ``target`` (see :meth:`_lower`), then cancel what waits for approval.

        ``enter_shadow`` also turns shadow mode on (None: when the target is 0 and the service
        is configured so). ``expected_version`` is the flags version the decision was read at.
        """
        shadow = (self.shadow_at_zero and target == 0) if enter_shadow is None else enter_shadow
        made = self._lower(name, target, actor=actor, reason=reason, shadow=shadow, expected=expected_version)
        if self._on_rollback is not None:
            self._on_rollback(name, actor)
        return made

    def _lower(self, name: str, target: float, *, actor: str, reason: str | None, shadow: bool,
               expected: int | None) -> list[FlagChange]:
        """Lower the percentage to ``target`` (and turn shadow on when ``shadow``); a rollback always wins.

        A target above the current percentage is refused (a rollback never raises it).
        The first write is conditional on ``expected`` (the version the decision was read
        at) when given, else on the version just read; a concurrent change makes it read
        again and lower whatever is there now, until it lands — or until the percentage is
        already at or below the target (someone else rolled back further).
        """
        try:
            checked = validate_flags({PERCENTAGE: target})[PERCENTAGE]
        except FlagError as exc:
            raise FlagError(str(exc), field="target") from None
        current = self.store.read_fresh(name)
        if checked > current.percentage:
            raise FlagError(
                f"rollback target {checked:g} is above the current percentage {current.percentage:g}",
                field="target",
            )
        version = current.version if expected is None else expected
        changes: dict[str, Any] = {PERCENTAGE: checked, **({SHADOW: True} if shadow else {})}
        for _ in range(ROLLBACK_ATTEMPTS):
            if current.percentage <= checked:
                return []
            try:
                return self.set_flags(name, changes, actor=actor, reason=reason, expected_version=version)
            except ConflictError:
                current = self.store.read_fresh(name)
                version = current.version
        raise ConflictError(name, current.version, None)
