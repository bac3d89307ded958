"""The V2Rollout extension: the facade hosts call. It validates names and delegates; the work is elsewhere.

Per-app state is a :class:`~flask_v2rollout.runtime.Runtime` in ``app.extensions["v2rollout"]``;
registrations live in this object's :class:`~flask_v2rollout.registry.Registry`, shared by every app.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypedDict, cast

from flask import Flask, current_app, has_request_context
from opentelemetry import _logs as otel_logs
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace as otel_trace

from .admin import register_admin
from .approvals import APPROVED
from .binding import Binding
from .compare import Comparator, Extractor
from .decisions.evaluator import GateHistory, GateReport
from .dispatch import Calculator, Outcome
from .errors import (
    ApprovalError,
    ApprovalRequired,
    ConflictError,
    FlagError,
    GateError,
    RolloutError,
    StaleDecisionError,
)
from .flags import (
    FLAG_NAMES,
    MAX_ACTOR,
    MAX_REASON,
    PERCENTAGE,
    SHADOW,
    FlagChange,
    validate_flags,
    validate_text,
)
from .journal import summarize
from .metrics.recorder import parse_window
from .metrics.store import Minute, Window
from .pipeline import Assignment
from .registry import Registry, Rollout, UserLoader, make_rollout
from .replay import replay as replay_inputs
from .runtime import Health, Providers, Runtime
from .settings import DEFAULTS, Settings
from .targeting import make_targeting

if TYPE_CHECKING:
    from werkzeug.local import LocalProxy

#: Flask's ``current_app`` as the proxy it is: ``_get_current_object()`` is one context lookup
_CURRENT_APP = cast("LocalProxy[Flask]", current_app)


class Status(TypedDict):
    """One rollout at a glance (``V2Rollout.status()``, the API's rollout resource, ``flask v2rollout status``)."""

    rollout: str
    flags: dict[str, Any]
    flag_version: int | None
    stage: str
    gate: dict[str, Any]
    alerts: list[dict[str, Any]]
    autopilot: dict[str, Any] | None
    #: the runbook's daily figures: total_calculations_24h, agreement, fallback reasons, top subjects, availability
    daily: dict[str, Any]


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
        self._providers = Providers(tracer_provider, meter_provider, logger_provider)
        self.registry = Registry()
        if app is not None:
            self.init_app(app, db=db)

    # -- setup ----------------------------------------------------------------
    def init_app(self, app: Flask, *, db: Any = None) -> None:
        """Register on ``app``: config defaults, the per-app runtime, the admin blueprint.

        Reads every ``V2ROLLOUT_*`` key once (see :mod:`flask_v2rollout.settings`); a bad
        value raises ``RuntimeError`` naming its key. ``db`` is the host's
        Flask-SQLAlchemy object, used unless ``V2ROLLOUT_DATABASE_URI`` is set.
        """
        if "v2rollout" in app.extensions:
            raise RuntimeError("V2Rollout is already initialised on this app.")
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        settings = Settings.from_config(app.config)
        runtime = app.extensions["v2rollout"] = Runtime(app, self.registry, settings, db=db,
                                                        providers=self._providers)
        binding = app.extensions[Binding.KEY] = Binding(rollout=self, registry=self.registry, settings=settings,
                                                        access=runtime.access)
        register_admin(app, binding)

    def register(
        self,
        name: str,
        *,
        v1: Calculator,
        v2: Calculator,
        compare: Comparator | None = None,
        salt: str | None = None,
        subject: Callable[..., Any] | None = None,
        extract: str | Extractor | None = None,
        metadata: Callable[[Any], Mapping[str, Any]] | None = None,
        defaults: Mapping[str, Any] | None = None,
        dual_run: bool = False,
        offline: Mapping[str, float] | None = None,
        v2_timeout_ms: float | None = None,
        log_fields: Mapping[str, str] | None = None,
        record_inputs: bool = False,
        redact_inputs: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None,
        allow: Iterable[Any] | None = None,
        deny: Iterable[Any] | None = None,
        allow_if: Callable[[str], Any] | None = None,
        deny_if: Callable[[str], Any] | None = None,
    ) -> Rollout:
        """Register a rollout.

        ``salt`` seeds the bucketing: by default the rollout's name, so two rollouts
        put independent cohorts on v2; ``salt=""`` hashes the bare user id, the
        runbook's ``md5(user_id) % 100`` (keeps every user's version when moving a
        hand-run rollout onto the extension; see docs/bucketing.md).
        ``subject`` gets the calculator's arguments and returns the label
        logged with each call (e.g. the customer or the item); ``extract`` (a key
        path like ``"items.0.score"`` or a callable) finds the compared number in a
        value; ``compare(v1_value, v2_value)`` replaces the default agreement classes;
        ``metadata`` maps a value to the log record's metadata; ``defaults``
        are this rollout's initial flags; ``dual_run`` also runs v1 off the
        path for v2-served calls, so agreement is measured at 50 % and 100 %;
        ``offline`` gives the offline validation's ``agreement_rate`` and
        ``fallback_rate`` (fractions) that the shadow gate compares with;
        ``v2_timeout_ms`` gives v2 a deadline on the request path: v1 is served when
        v2 misses it (reason ``deadline``; the late result is discarded and counted);
        ``log_fields`` renames the JSONL records' ``subject`` / ``value`` fields so existing
        recipes keep working; ``record_inputs`` keeps each call's arguments in SQL (bounded,
        as JSON) for ``flask v2rollout replay``, passed first through ``redact_inputs``
        (``{"args": [...], "kwargs": {...}}`` → what may be stored).
        ``allow`` / ``deny`` (user ids) and ``allow_if`` / ``deny_if`` (a predicate on the
        user id, e.g. staff) pin users to v2 / v1 whatever the percentage (deny wins); their
        calls are counted in the arms ``v2_allowed`` / ``v1_denied``, apart from the compared
        arms (the gate report's ``targeted``).
        """
        if name in self.registry.rollouts:
            raise ValueError(f"rollout {name!r} is already registered")
        rollout = make_rollout(
            name, v1=v1, v2=v2, compare=compare, salt=salt, subject=subject, extract=extract, metadata=metadata,
            defaults=defaults, dual_run=dual_run, offline=offline, v2_timeout_ms=v2_timeout_ms,
            log_fields=log_fields, record_inputs=record_inputs, redact_inputs=redact_inputs,
            targeting=make_targeting(allow=allow, deny=deny, allow_if=allow_if, deny_if=deny_if),
        )
        self.registry.add(rollout)
        return rollout

    def user_loader(self, func: UserLoader) -> UserLoader:
        """Decorator: ``func()`` returns the current user's id (or ``None`` for anonymous)."""
        self.registry.user_loader = func
        return func

    def admin_required(self, func: Callable[[], Any]) -> Callable[[], Any]:
        """Decorator: ``func()`` returns the admin actor for the current request, or ``None`` to refuse.

        Opens the admin blueprint (closed until this or ``V2ROLLOUT_ADMIN_TOKEN`` is set);
        what it returns is recorded as the actor of every change made through it.
        """
        self.registry.admin_required = func
        return func

    def probe(self, name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
        """Decorator: a host data-quality probe returning a number (or None), sampled at each flush."""
        def decorator(func: Callable[[], Any]) -> Callable[[], Any]:
            self.registry.probes[name] = func
            return func
        return decorator

    def verify_check(self, name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
        """Decorator: a pre-deployment check for ``flask v2rollout verify``; returns (ok, detail) or a bool."""
        def decorator(func: Callable[[], Any]) -> Callable[[], Any]:
            self.registry.verify_checks[name] = func
            return func
        return decorator

    # -- lookups ----------------------------------------------------------------
    @property
    def rollouts(self) -> Mapping[str, Rollout]:
        return dict(self.registry.rollouts)

    def _runtime(self) -> Runtime:
        try:
            # the app itself, then its dict: one context lookup (each attribute read through the proxy is one)
            runtime: Runtime = _CURRENT_APP._get_current_object().extensions["v2rollout"]
        except RuntimeError:
            raise RuntimeError(
                "Working outside of an application context: V2Rollout needs the app. "
                "Use `with app.app_context():`."
            ) from None
        except KeyError:
            raise RuntimeError(
                "V2Rollout is not initialised on the current app. Call rollout.init_app(app)."
            ) from None
        return runtime

    def _rollout(self, name: str) -> Rollout:
        return self.registry.get(name)

    # -- request path (pipeline.py) -------------------------------------------------------
    def current_version(self, name: str) -> str:
        """``"v1"`` or ``"v2"``: the version assigned to this request's user (assigned now if not yet)."""
        rollout = self._rollout(name)
        if not has_request_context():
            raise RuntimeError("current_version() needs a request; outside one use calculate(..., user_id=…)")
        return self._runtime().pipeline.assignment(rollout).version

    def assignment(self, name: str, *, user_id: Any = None) -> Assignment:
        """How this request's user (or ``user_id``) is assigned: version, user id, the flags it was decided on.

        The request's assignment is the one ``calculate()`` serves in the same request (kept on ``g``);
        ``user_id`` buckets that user now, in any app context (the OpenFeature provider's targeting key).
        """
        rollout = self._rollout(name)
        pipeline = self._runtime().pipeline
        if user_id is not None:
            return pipeline.assign(rollout, str(user_id))
        if not has_request_context():
            raise RuntimeError("assignment() needs a request or user_id=…")
        return pipeline.assignment(rollout)

    def calculate(self, name: str, *args: Any, user_id: Any = None, **kwargs: Any) -> Outcome:
        """Run the rollout for the current user (or ``user_id``) and return the Outcome.

        ``user_id`` is reserved for this purpose and never passed to the calculators.
        A v2 failure serves v1 (fallback on); an exception of v1 (or of v2 with
        fallback off) is counted, then raised unchanged.
        """
        rollout = self.registry.rollouts.get(name) or self.registry.get(name)  # get: UnknownRollout, named
        try:  # _runtime(), inline: this runs on every call
            runtime: Runtime = _CURRENT_APP._get_current_object().extensions["v2rollout"]
        except (RuntimeError, KeyError):
            runtime = self._runtime()  # raises the clear RuntimeError
        return runtime.pipeline.calculate(rollout, args, kwargs, user_id)

    def track_conversion(self, name: str) -> None:
        """Record a business conversion for the current request's user."""
        rollout = self._rollout(name)
        self._runtime().pipeline.track_conversion(rollout)

    def track_event(self, name: str, event: str, *, count: float = 1, user_id: Any = None) -> None:
        """Count a business event (``"complaint"``, …) for the current request's user (or ``user_id``).

        It lands in the arm that user is assigned now (a support desk filing a complaint
        passes ``user_id=``).
        The catalogue compares complaints per user of v2 with v1's (``v2_vs_v1_complaints_pct``);
        every event shows in ``metrics()`` under each arm's ``events``.
        """
        rollout = self._rollout(name)
        if not isinstance(event, str) or not event.strip() or len(event) > 100:
            raise ValueError("event must be a non-empty name of at most 100 characters")
        if isinstance(count, bool) or not isinstance(count, (int, float)) or not 0 < count < 1e9:
            raise ValueError(f"count must be a positive number, got {count!r}")
        self._runtime().pipeline.track_event(rollout, event.strip(), float(count),
                                             None if user_id is None else str(user_id))

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for this app's queued shadow work (tests, graceful shutdown); True if all done."""
        return self._runtime().shadow.drain(timeout)

    # -- metrics -----------------------------------------------------------------------------
    def flush(self) -> bool:
        """Write this process's pending metrics (and probe samples) to SQL now; False if SQL failed (data kept)."""
        return self._runtime().flusher.cycle(hooks=False)

    def metrics(self, name: str, window: str | int = "5m", *, now: float | None = None) -> Window:
        """Merged figures of every process over a window (``"5m"``, ``"24h"`` or seconds)."""
        self._rollout(name)
        seconds = window if isinstance(window, int) else parse_window(window)
        runtime = self._runtime()
        return runtime.metric_store.window(name, seconds, now=runtime.clock() if now is None else now)

    def comparisons(self, name: str, window: str | int = "24h", *, outlier: float = 5.0) -> dict[str, Any]:
        """The shadow comparisons recorded in SQL over a window: per subject v1/v2 averages, differences,
        agreement; overall; the pairs more than ``outlier`` apart (the runbook's investigation)."""
        self._rollout(name)
        seconds = window if isinstance(window, int) else parse_window(window)
        runtime = self._runtime()
        runtime.journal.flush(prune=True)
        now = runtime.clock()
        report = summarize(runtime.journal.comparisons(name, since=now - seconds), outlier=outlier)
        return {"rollout": name, "window_s": seconds, "from": now - seconds, "to": now, **report}

    def recorded_inputs(self, name: str, window: str | int = "24h") -> list[dict[str, Any]]:
        """Inputs recorded over a window (rollouts registered with ``record_inputs=True``), oldest first."""
        self._rollout(name)
        seconds = window if isinstance(window, int) else parse_window(window)
        runtime = self._runtime()
        runtime.journal.flush(prune=True)
        return runtime.journal.recorded_inputs(name, since=runtime.clock() - seconds)

    def replay(self, name: str, inputs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """Run the current v2 (falling back to v1) and v1 on recorded inputs, outside any request and
        without counting, logging or shadowing: agreement, fallback and error figures before a resume."""
        return replay_inputs(self._rollout(name), inputs)

    def series(self, name: str, window: str | int = "1h", *, now: float | None = None) -> list[Minute]:
        """Per-minute figures over a window, for charts."""
        self._rollout(name)
        seconds = window if isinstance(window, int) else parse_window(window)
        runtime = self._runtime()
        return runtime.metric_store.series(name, seconds, now=runtime.clock() if now is None else now)

    def stats(self, name: str) -> dict[str, dict[str, dict[str, float]]]:
        """This process's lifetime counters for a rollout: ``{arm: {metric: {key: value}}}``."""
        self._rollout(name)
        return self._runtime().recorder.local(name)

    # -- flags --------------------------------------------------------------------
    def flags(self, name: str, *, fresh: bool = False) -> dict[str, Any]:
        """The rollout's four flags (from the process cache unless ``fresh``)."""
        self._rollout(name)
        store = self._runtime().store
        return dict((store.read_fresh(name) if fresh else store.get(name)).values)

    def flag_state(self, name: str) -> dict[str, Any]:
        """Flags and their row version from one SQL read (for read-modify-write with ``expected_version``)."""
        self._rollout(name)
        snap = self._runtime().store.read_fresh(name)
        return {"flags": dict(snap.values), "version": snap.version}

    def flag_version(self, name: str) -> int:
        """The row version of the rollout's flags, for ``expected_version``."""
        self._rollout(name)
        version = self._runtime().store.read_fresh(name).version
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
        runtime = self._runtime()
        checked = validate_flags(changes)
        current = runtime.store.read_fresh(name)
        if runtime.approvals.needed(current.values, checked):
            validate_text(actor, "actor", MAX_ACTOR, required=True)
            validate_text(reason, "reason", MAX_REASON)
            if expected_version is not None and expected_version != current.version:
                raise ConflictError(name, expected_version, current.version)
            raise ApprovalRequired(runtime.approvals.request(name, checked, flag_version=current.version,
                                                             actor=actor, reason=reason))
        return runtime.flags.set_flags(name, checked, actor=actor, reason=reason, expected_version=expected_version)

    def approvals(self, name: str) -> list[dict[str, Any]]:
        """The rollout's changes waiting for approval, and recently decided ones, newest first."""
        self._rollout(name)
        return self._runtime().approvals.listing(name)

    def approve(self, name: str, approval_id: int, *, actor: str) -> list[FlagChange]:
        """Apply a pending change as its requester, approved by ``actor`` (who must be someone else).

        The change lands compare-and-set on the flag version it was requested at: if the
        flags moved since, the approval is void (``ApprovalError``) and nothing changes.
        """
        self._rollout(name)
        validate_text(actor, "actor", MAX_ACTOR, required=True)
        store = self._runtime().approvals
        found = store.check_approver(name, approval_id, actor)
        if not store.decide(name, approval_id, APPROVED, actor):
            raise ApprovalError(f"approval #{approval_id} was decided by someone else meanwhile")
        suffix = f" [approved by {actor}, #{approval_id}]"
        reason = ((found["reason"] or "")[:MAX_REASON - len(suffix)] + suffix).strip()
        try:
            return self._runtime().flags.set_flags(name, found["changes"], actor=found["requested_by"],
                                                   reason=reason[:MAX_REASON],
                                                   expected_version=found["flag_version"])
        except ConflictError:
            store.void(name, approval_id)
            raise ApprovalError(f"the flags of {name} changed since approval #{approval_id} was requested; "
                                "it is void: request the change again") from None

    def rollback(self, name: str, target: float = 0, *, actor: str, reason: str | None = None,
                 enter_shadow: bool | None = None) -> list[FlagChange]:
        """Lower the rollout percentage to ``target`` (emergency: 0), audited; a higher target is refused.

        ``enter_shadow`` turns shadow mode on too; by default a rollback to 0 does
        (``V2ROLLOUT_ROLLBACK_ENTERS_SHADOW``), so the rollout is back in shadow mode.
        """
        self._rollout(name)
        if enter_shadow is not None and not isinstance(enter_shadow, bool):
            raise FlagError(f"enter_shadow must be true or false, got {enter_shadow!r}", field="enter_shadow")
        return self._runtime().flags.rollback(name, target, actor=actor, reason=reason, enter_shadow=enter_shadow)

    # -- gates, alerts, checks ------------------------------------------------------------------
    def gate(self, name: str) -> GateReport:
        """The current stage's gate: decision, every criterion, and the rollback matrix's verdict."""
        self._rollout(name)
        runtime = self._runtime()
        return runtime.evaluator.gate(name, runtime.clock())

    def gate_history(self, name: str, *, points: int = 24) -> GateHistory:
        """The current gate's anytime-valid intervals at ``points`` times since the stage began (charts)."""
        self._rollout(name)
        if not 1 <= points <= 500:
            raise ValueError("points must be between 1 and 500")
        runtime = self._runtime()
        return runtime.evaluator.gate_history(name, runtime.clock(), points=points)

    def status(self, name: str) -> Status:
        """Flags, stage, gate summary, active alerts and the autopilot's last word."""
        self._rollout(name)
        evaluator = self._runtime().evaluator
        snap = self._runtime().store.read_fresh(name)
        gate = self.gate(name)
        return {
            "rollout": name, "flags": dict(snap.values), "flag_version": snap.version, "stage": gate["stage"],
            "gate": {k: gate[k] for k in ("gate", "decision", "reasons", "to_stage", "matrix", "next_advance_at",
                                          "decision_window_open", "targeted")},
            "alerts": evaluator.alerts(name),
            "autopilot": evaluator.last_actions.get(name),
            "daily": evaluator.daily(name, self._runtime().clock()),
        }

    def advance(self, name: str, *, actor: str, reason: str | None = None) -> list[FlagChange]:
        """Move to the next stage when its gate says GO (audited); else ``GateError``.

        The write is conditional on the flags version the gate was read at: if anything
        changed in between (an emergency rollback), ``StaleDecisionError`` and nothing moves.
        """
        gate = self.gate(name)
        if gate["decision"] != "GO":
            why = "; ".join(gate["reasons"][:3]) or "see the gate"
            raise GateError(f"gate {gate['gate']} is {gate['decision']}: {why}")
        if gate["to_stage"] is None:
            raise GateError(f"{name} is at the last stage ({gate['stage']})")
        stage = next(s for s in self._runtime().evaluator.stages if s.name == gate["to_stage"])
        try:
            return self.set_flags(name, {PERCENTAGE: stage.percentage, SHADOW: stage.shadow}, actor=actor,
                                  reason=reason or f"gate {gate['gate']} GO", expected_version=gate["flag_version"])
        except ConflictError as exc:  # a rollback (or any change) landed after the gate was read
            raise StaleDecisionError(name, gate["flag_version"], exc.actual) from None

    def evaluate(self) -> dict[str, Any] | None:
        """Evaluate alerts, auto-rollback and autopilot now (None: another process holds the lease)."""
        runtime = self._runtime()
        runtime.flusher.cycle(hooks=False)  # this process's counts and fresh probe samples first
        return runtime.evaluator.run()

    def send_test_alert(self, *, actor: str) -> None:
        """Deliver a test alert through every notifier, so operators see the channels work (pre-deployment checklist).

        Unlike an alert, it waits for each delivery (each attempt bounded by its deadline) to report the outcome.
        Raises ``RolloutError`` when no notifier is configured or a delivery failed.
        """
        runtime = self._runtime()
        notifiers = runtime.notifications.notifiers
        if not notifiers:
            raise RolloutError("no alert webhook is configured (V2ROLLOUT_WEBHOOK_URL), nor any other notifier")
        payload = {"event": "alert_test", "rule": "test_alert", "severity": "LOW", "actor": actor,
                   "description": "test alert from Flask-V2Rollout", "at": runtime.clock()}
        failed = [n for n in notifiers if not n.send(payload)]
        if failed:
            where = ", ".join(getattr(n, "url", n.name) for n in failed)
            raise RolloutError(f"test alert not delivered to {where}; see the log for the error")

    def alerts(self, name: str | None = None) -> list[dict[str, Any]]:
        """Pending and firing alerts."""
        if name is not None:
            self._rollout(name)
        return self._runtime().evaluator.alerts(name)

    def alert_history(self, name: str | None = None, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Alert transitions (fired, resolved), newest first."""
        if name is not None:
            self._rollout(name)
        return self._runtime().evaluator.history(name, limit=limit, offset=offset)

    def record_check(
        self, name: str, check: str, passed: bool, *, actor: str, note: str | None = None,
    ) -> dict[str, Any]:
        """Record a manual gate criterion ("team_confident", …) with who and when."""
        self._rollout(name)
        return self._runtime().evaluator.record_check(name, check, passed, actor=actor, note=note)

    def checks(self, name: str) -> list[dict[str, Any]]:
        """Every manual check with its latest verdict in the current stage, who and when (``passed`` None:
        not recorded since the stage began — the gate counts only those)."""
        self._rollout(name)
        return self._runtime().evaluator.checks(name)

    def verify(self) -> list[dict[str, Any]]:
        """The pre-deployment checklist: built-in checks, then the host's; each PASS or FAIL with detail."""
        return self._runtime().checklist.run(self.registry.verify_checks)

    def health(self) -> Health:
        """This process's view: flag store, metrics flush backlog, shadow queue, notifications."""
        return self._runtime().health()

    def audit_count(self, name: str | None = None) -> int:
        """How many audited flag changes there are (of one rollout, or all)."""
        if name is not None:
            self._rollout(name)
        return self._runtime().store.audit_count(name)

    def audit(self, name: str | None = None, *, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Audited flag changes, newest first (of one rollout, or all)."""
        if name is not None:
            self._rollout(name)
        return self._runtime().store.audit(name, limit=limit, offset=offset)


__all__ = ["V2Rollout", "Rollout", "Assignment", "FLAG_NAMES"]
