"""The request path, top to bottom: lazy assignment → span → dispatch → outcome → guarded sinks.

1. **Assignment** happens on the first ``calculate()`` / ``current_version()`` of a
   request and is kept with the request (in its WSGI environ, one lookup per call): the
   user id (host loader, Flask-Login, or a sticky anonymous id in the session), the
   flags from the store's cache, the bucket. A request that never calculates
   assigns nothing and never touches the session (no ``Set-Cookie``, no ``Vary``).
2. **calculate()**: the telemetry span is current while :func:`dispatch.run`
   serves the assigned version and falls back to v1.
3. **Sinks**, in order: metrics recorder, JSONL log, signals, shadow submission.
   Each is guarded: host code running inside one (a ``subject=`` or ``metadata=``
   callable, a signal receiver) is logged and counted as a sink error, and the
   caller still gets its outcome. Adding a sink is one entry in :attr:`Pipeline.sinks`.

Shadow results come back through the same object (:class:`ShadowSinks` protocol).
"""
from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from time import monotonic
from typing import Any, cast

from flask import Flask, Request, Response, has_request_context, request
from opentelemetry.trace import SpanContext
from werkzeug.local import LocalProxy

from . import signals
from .bucketing import fine_bucket
from .compare import FALLBACK, V2_ERROR, Comparison, number_of
from .dispatch import Deadline, Outcome, matches, qualified_name, run
from .flags import FlagSnapshot, FlagStore
from .identity import resolve_user_id
from .journal import Journal
from .jsonlog import JsonlLog
from .metrics.inflight import InFlight
from .metrics.recorder import Recorder
from .registry import Registry, Rollout
from .shadow import ShadowJob, ShadowRunner, ShadowWork, shadow_job
from .targeting import TARGETED_ARMS
from .telemetry import Telemetry

log = logging.getLogger("flask_v2rollout")

#: the request's :class:`_RequestAssignments` in ``request.environ``
_ENVIRON_KEY = "flask_v2rollout.assignments"
_UNRESOLVED = object()
SAMPLE_SCALE = 10_000
#: Flask's ``request`` as the proxy it is: ``_get_current_object()`` is one context lookup
_REQUEST = cast("LocalProxy[Request]", request)


@dataclass(frozen=True)
class Assignment:
    """The version one user gets for one rollout, with the flags it was decided from."""

    version: str
    user_id: str | None
    flags: FlagSnapshot
    #: the version was pinned (the testing kit), not bucketed
    pinned: bool = False
    #: the arm the user's calls are counted in: the version, or its allow/deny-list arm (``targeting.TARGETED_ARMS``)
    arm: str = ""

    @property
    def counted_as(self) -> str:
        return self.arm or self.version


class _RequestAssignments:
    """What one request has assigned so far (kept in its WSGI environ, so it dies with the request)."""

    __slots__ = ("user_id", "by_rollout", "calculated", "buckets", "responded", "request_id")

    def __init__(self) -> None:
        self.user_id: Any = _UNRESOLVED
        self.by_rollout: dict[str, Assignment] = {}
        #: (rollout, arm) of every calculate() in this request, for the response's status
        self.calculated: set[tuple[str, str]] = set()
        #: (salt, user id) -> fine bucket, so ``calculate(user_id=…)`` hashes a user once per request
        self.buckets: dict[tuple[str, str], int] = {}
        self.responded = False
        #: the request's id (its ``V2ROLLOUT_REQUEST_ID_HEADER``, else generated), carried by every record
        self.request_id: str | None = None


def _state_in(environ: dict[str, Any]) -> _RequestAssignments:
    """The request's assignments, kept in its WSGI environ (made on first use)."""
    state: _RequestAssignments | None = environ.get(_ENVIRON_KEY)
    if state is None:
        state = environ[_ENVIRON_KEY] = _RequestAssignments()
    return state


@dataclass(slots=True)
class Call:
    """One finished ``calculate()``: what the sinks receive."""

    rollout: Rollout
    flags: FlagSnapshot
    outcome: Outcome
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    subject: str | None
    #: the in-flight sweep already counted this call while it ran
    counted: bool = False
    #: the ``v2rollout.calculate`` span of the call (None when nothing traced it), for the shadow span's link
    span: SpanContext | None = None
    #: the request's assignments (None outside a request): where its request id is kept
    request: _RequestAssignments | None = None
    #: the id every record of this call carries (``Pipeline.request_id``, made on first use)
    request_id: str | None = None


Sink = Callable[[Call], None]


class Pipeline:
    """The request path of one app; every collaborator is handed in by the runtime."""

    def __init__(
        self, *, app: Flask, registry: Registry, store: FlagStore, recorder: Recorder, telemetry: Telemetry,
        jsonlog: JsonlLog | None, shadow: ShadowRunner, in_flight: InFlight, on_activity: Callable[[], None],
        use_login: bool, session_key: str, shadow_sample: float, db_errors: frozenset[str],
        deadline_workers: int, journal: Journal, request_id_header: str = "X-Request-Id",
    ) -> None:
        self.app = app
        self.registry = registry
        self.store = store
        self.recorder = recorder
        #: replaced by the testing kit's ``capture_telemetry``
        self.telemetry = telemetry
        self.jsonlog = jsonlog
        self.shadow = shadow
        self.in_flight = in_flight
        self.journal = journal
        self._request_id_header = request_id_header
        self._on_activity = on_activity
        #: on_activity was called in this process (it starts the flusher: once is enough until a fork)
        self._active = False
        self._db_errors = db_errors
        self._deadline_workers = deadline_workers
        self._deadlines: dict[str, Deadline] = {}
        self._use_login = use_login
        self._session_key = session_key
        self._sample_threshold = round(shadow_sample * SAMPLE_SCALE)
        self._sample_seq = 0
        #: versions pinned by the testing kit, whatever the flags say
        self.forced: dict[str, str] = {}
        #: the sinks every finished call goes through, in order
        self.sinks: tuple[tuple[str, Sink], ...] = (
            ("metrics", self._count), ("jsonl", self._log), ("signals", self._signal), ("shadow", self._submit),
            ("inputs", self._record_inputs),
        )

    # -- 1. assignment -------------------------------------------------------------------------------
    def assignment(self, rollout: Rollout) -> Assignment:
        """This request's assignment for ``rollout``, made on first use and kept with the request."""
        return self._assigned(self._request_state(), rollout)

    def _assigned(self, state: _RequestAssignments, rollout: Rollout) -> Assignment:
        found = state.by_rollout.get(rollout.name)
        if found is None:
            if state.user_id is _UNRESOLVED:
                state.user_id = self._request_user_id()
            found = state.by_rollout[rollout.name] = self.assign(rollout, state.user_id, state=state)
        return found

    @staticmethod
    def _request_state() -> _RequestAssignments:
        return _state_in(_REQUEST._get_current_object().environ)  # one context lookup, not one per attribute

    def _request_user_id(self) -> str | None:
        try:
            return resolve_user_id(self.registry.user_loader, use_login=self._use_login,
                                   session_key=self._session_key)
        except Exception:
            log.exception("v2rollout: user loader failed; serving v1 to this request")
            return None

    def assign(self, rollout: Rollout, user_id: str | None, *, state: _RequestAssignments | None = None) -> Assignment:
        """Bucket ``user_id`` on the rollout's current flags (a pinned version wins).

        ``state``: the request's assignments, whose bucket cache spares a second md5 of the same user.
        """
        version, snap, arm = self._decide(rollout, user_id, state)
        return Assignment(version, user_id, snap, pinned=rollout.name in self.forced, arm=arm)

    def _decide(self, rollout: Rollout, user_id: str | None,
                state: _RequestAssignments | None) -> tuple[str, FlagSnapshot, str]:
        """:meth:`assign` without building the Assignment (``calculate(user_id=…)`` needs none): the version,
        the flags, and the allow/deny-list arm the user is counted in ("" for a bucketed user)."""
        snap = self.store.get(rollout.name)
        forced = self.forced.get(rollout.name) if self.forced else None
        listed = self._listed(rollout, user_id) if forced is None and rollout.targeting.active else None
        if forced is not None:
            version = forced
        elif listed is not None:
            version = listed
        elif user_id is None:
            version = "v1"
        elif state is None:
            version = "v2" if fine_bucket(user_id, rollout.salt) < snap.threshold else "v1"
        else:
            key = (rollout.salt, user_id)
            fine = state.buckets.get(key)
            if fine is None:
                fine = state.buckets[key] = fine_bucket(user_id, rollout.salt)
            version = "v2" if fine < snap.threshold else "v1"  # the rule of bucketing.in_rollout
        if signals.version_assigned.receivers:
            self._guarded(rollout, version, "signals", lambda: signals.version_assigned.send(
                self.app, rollout=rollout.name, user_id=user_id, version=version, percentage=snap.percentage))
        return version, snap, TARGETED_ARMS[version] if listed is not None else ""

    def _listed(self, rollout: Rollout, user_id: str | None) -> str | None:
        """The allow/deny lists' word on this user; a failing host predicate leaves it to the bucket."""
        try:
            return rollout.targeting.version_for(user_id)
        except Exception:
            log.exception("v2rollout: a targeting predicate of %r failed; the bucket decides", rollout.name)
            self.recorder.sink_error(rollout.name, "v1", "targeting")
            return None

    # -- 2. calculate ----------------------------------------------------------------------------------
    def calculate(self, rollout: Rollout, args: tuple[Any, ...], kwargs: Mapping[str, Any],
                  user_id: Any = None) -> Outcome:
        """Serve the assigned version, run every sink, then return the Outcome (or re-raise v1's error).

        The request's state is looked up once; the sinks are called in a plain loop (no closure per sink).
        """
        try:  # one context lookup for "in a request?" and its state
            environ = _REQUEST._get_current_object().environ
        except RuntimeError:  # outside a request
            state = None
        else:
            state = _state_in(environ)
        if user_id is not None:
            uid: str | None = str(user_id)
            version, flags, listed_arm = self._decide(rollout, uid, state)
        elif state is not None:
            assignment = self._assigned(state, rollout)
            version, uid, flags, listed_arm = assignment.version, assignment.user_id, assignment.flags, assignment.arm
        else:
            raise RuntimeError("calculate() outside a request needs user_id=…")
        deadline = self._deadline(rollout) if rollout.v2_timeout_ms is not None else None
        token = self.in_flight.start(rollout.name, listed_arm or version)
        telemetry = self.telemetry
        try:
            if telemetry.quiet():  # nothing listens: no span, no closure
                outcome = run(rollout.name, rollout.v1, rollout.v2, version, flags.fallback, args, kwargs, uid,
                              deadline)
                span = None
            else:
                outcome, span = telemetry.calculate(rollout.name, flags, version, uid, lambda: run(
                    rollout.name, rollout.v1, rollout.v2, version, flags.fallback, args, kwargs, uid, deadline))
        finally:
            counted = self.in_flight.finish(token)
        if listed_arm:  # an allow/deny-listed user: counted apart from the compared arms
            outcome.assigned = listed_arm
        # 3. sinks
        if not self._active:
            self._activity()
        arm = outcome.assigned
        if state is not None:
            state.calculated.add((rollout.name, arm))
        subject = None
        if rollout.subject is not None:
            subject = self._guarded(rollout, arm, "subject", lambda: rollout.subject_of(args, kwargs))
        call = Call(rollout, flags, outcome, args, kwargs, subject, counted, span, state)
        for name, sink in self.sinks:
            try:
                sink(call)
            except Exception:
                self._sink_failed(rollout, arm, name)
        if outcome.raised is not None:
            raise outcome.raised
        return outcome

    def request_id(self, call: Call) -> str:
        """The call's request id, made on first use: the gateway's header when it is sane, else one made up
        once per request (or per call outside a request). Lazy: a call no record carries costs no uuid."""
        if call.request_id is None:
            state = call.request
            if state is None:
                call.request_id = uuid.uuid4().hex
            else:
                if state.request_id is None:
                    given = request.headers.get(self._request_id_header, "").strip()
                    state.request_id = given if 0 < len(given) <= 128 and given.isprintable() else uuid.uuid4().hex
                call.request_id = state.request_id
        return call.request_id

    def _activity(self) -> None:
        self._on_activity()
        self._active = True

    def after_fork(self) -> None:
        """In a forked child: the parent's flusher thread does not run here, so the next call starts one."""
        self._active = False

    def _guarded(self, rollout: Rollout, arm: str, sink: str, work: Callable[[], Any]) -> Any:
        """Run ``work``; an exception is logged and counted, never passed to the caller."""
        try:
            return work()
        except Exception:
            self._sink_failed(rollout, arm, sink)
            return None

    def _sink_failed(self, rollout: Rollout, arm: str, sink: str) -> None:
        """Inside an ``except``: log the exception and count it as a sink error."""
        log.exception("v2rollout: %s of rollout %r failed; the outcome is served anyway", sink, rollout.name)
        self.recorder.sink_error(rollout.name, arm, sink)

    # -- 3. sinks ------------------------------------------------------------------------------------------
    def _deadline(self, rollout: Rollout) -> Deadline:
        found = self._deadlines.get(rollout.name)
        if found is None:
            assert rollout.v2_timeout_ms is not None
            found = self._deadlines.setdefault(rollout.name, Deadline(
                rollout.v2_timeout_ms / 1000.0, workers=self._deadline_workers,
                on_late=lambda: self.recorder.late(rollout.name)))
        return found

    def _count(self, call: Call) -> None:
        outcome = call.outcome
        raised = outcome.raised
        self.recorder.calculation(
            outcome, subject=call.subject, unhandled=None if raised is None else qualified_name(raised),
            counted=call.counted,
        )
        # the host's database failing under either calculator feeds db_connection_failures
        if outcome.error is not None and matches(outcome.error, self._db_errors):
            self.recorder.db_failure("v2")
        if raised is not None and raised is not outcome.error and matches(raised, self._db_errors):
            self.recorder.db_failure(outcome.version)

    def _log(self, call: Call) -> None:
        if not call.flags.monitoring or self.jsonlog is None:
            return
        outcome, rollout = call.outcome, call.rollout
        meta = None
        if rollout.metadata is not None and outcome.raised is None:
            meta = dict(rollout.metadata(outcome.value))
        self.jsonlog.calculation(
            outcome, subject=call.subject, number=number_of(rollout.extract, outcome.value), metadata=meta,
            request_id=self.request_id(call),
        )

    def _record_inputs(self, call: Call) -> None:
        """``record_inputs=True``: the call's arguments, redacted, as JSON into the bounded SQL record."""
        rollout = call.rollout
        if not rollout.record_inputs:
            return
        inputs: dict[str, Any] = {"args": list(call.args), "kwargs": dict(call.kwargs)}
        stored = inputs if rollout.redact_inputs is None else dict(rollout.redact_inputs(inputs))
        self.journal.inputs(rollout.name, subject=call.subject, request_id=self.request_id(call),
                            inputs=json.dumps(stored, separators=(",", ":")))

    def _signal(self, call: Call) -> None:
        outcome = call.outcome
        if outcome.raised is not None:
            return
        name = call.rollout.name
        if outcome.fallback_reason is not None and signals.fallback_used.receivers:
            signals.fallback_used.send(self.app, rollout=name, reason=outcome.fallback_reason, outcome=outcome)
        if signals.calculation_completed.receivers:
            signals.calculation_completed.send(self.app, rollout=name, outcome=outcome)

    def _submit(self, call: Call) -> None:
        """Shadow on and v1 served: v2 off the path; ``dual_run``: v1 off the path for v2-served calls."""
        outcome, rollout = call.outcome, call.rollout
        if outcome.raised is not None:
            return
        if outcome.assigned == "v1":
            if call.flags.shadow and self._sampled(outcome.user_id):
                self._submit_version(call, "v2")
        elif rollout.dual_run and outcome.version == "v2" and self._sampled(outcome.user_id):
            self._submit_version(call, "v1")

    def _sampled(self, user_id: str | None) -> bool:
        """Shadow this call? A hash of (user, call number) — independent of the rollout bucket."""
        if self._sample_threshold >= SAMPLE_SCALE:
            return True
        if self._sample_threshold <= 0:
            return False
        self._sample_seq += 1
        return fine_bucket(f"{user_id}#{self._sample_seq}", salt="v2rollout-shadow-sample") < self._sample_threshold

    def _submit_version(self, call: Call, version: str) -> bool:
        work = ShadowWork(
            self, call.rollout, version, call.outcome, call.args, call.kwargs, call.subject, call.flags.monitoring,
            call.span, monotonic(), self.request_id(call),
        )
        return self.shadow.submit(shadow_job(work))

    # -- responses (availability) -------------------------------------------------------------------
    def record_response(self, response: Response) -> Response:
        """``after_request``: count the status of a request that calculated, once per (rollout, arm)."""
        state: _RequestAssignments | None = _REQUEST._get_current_object().environ.get(_ENVIRON_KEY)
        if state is not None and state.calculated and not state.responded:
            state.responded = True
            for rollout, arm in state.calculated:
                self.recorder.response(rollout, arm, response.status_code)
        return response

    def record_failure(self, exc: BaseException | None) -> None:
        """``teardown_request``: an exception that left the view unanswered counts as a 500."""
        if exc is None:
            return
        state: _RequestAssignments | None = _REQUEST._get_current_object().environ.get(_ENVIRON_KEY)
        if state is not None and state.calculated and not state.responded:
            state.responded = True
            for rollout, arm in state.calculated:
                self.recorder.response(rollout, arm, 500)

    # -- conversions ------------------------------------------------------------------------------------
    def track_conversion(self, rollout: Rollout) -> None:
        """Count a business conversion for this request's user, in the arm they are assigned."""
        assignment = self.assignment(rollout)
        self.recorder.conversion(rollout.name, assignment.counted_as, assignment.user_id)
        self._activity()
        if signals.conversion_tracked.receivers:
            self._guarded(rollout, assignment.version, "signals", lambda: signals.conversion_tracked.send(
                self.app, rollout=rollout.name, user_id=assignment.user_id, version=assignment.version))

    def track_event(self, rollout: Rollout, name: str, count: float, user_id: str | None = None) -> None:
        """Count a business event (a complaint) in the arm of ``user_id`` (or this request's user)."""
        if user_id is not None:
            assignment = self.assign(rollout, user_id)
        elif has_request_context():
            assignment = self.assignment(rollout)
        else:
            raise RuntimeError("track_event() outside a request needs user_id=…")
        self.recorder.event(rollout.name, assignment.counted_as, name, count)
        self._activity()

    # -- shadow results (ShadowSinks) ------------------------------------------------------------------
    @contextmanager
    def running(self, job: ShadowJob) -> Iterator[None]:
        with self.app.app_context(), self.telemetry.shadow_span(job):
            yield

    def failed(self, work: ShadowWork, exc: BaseException) -> None:
        self.telemetry.shadow_failed(exc)

    def compared(self, work: ShadowWork, comparison: Comparison, value: Any, duration_ms: float) -> None:
        rollout = work.rollout
        self.recorder.shadow(
            rollout.name, work.version, comparison.agreement, difference=comparison.difference,
            duration_ms=duration_ms,
        )
        self.telemetry.shadow_compared(work, comparison)
        self._guarded(rollout, work.version, "journal", lambda: self.journal.comparison(
            rollout.name, subject=work.subject, request_id=work.request_id, shadow_version=work.version,
            v1=comparison.v1_number, v2=comparison.v2_number, difference=comparison.difference,
            agreement=comparison.agreement))
        if work.monitoring and self.jsonlog is not None:
            jsonlog = self.jsonlog
            v2_value = value if work.version == "v2" else work.primary.value
            metadata = None
            describe = rollout.metadata
            if describe is not None and comparison.agreement not in (FALLBACK, V2_ERROR):
                metadata = self._guarded(rollout, work.version, "jsonl", lambda: dict(describe(v2_value)))
            self._guarded(rollout, work.version, "jsonl", lambda: jsonlog.shadow(
                rollout.name, subject=work.subject, user_id=work.primary.user_id, comparison=comparison,
                shadow_version=work.version, duration_ms=duration_ms, v2_metadata=metadata,
                request_id=work.request_id,
            ))
        if signals.shadow_compared.receivers:
            self._guarded(rollout, work.version, "signals", lambda: signals.shadow_compared.send(
                self.app, rollout=rollout.name, version=work.version, comparison=comparison,
                outcome=work.primary, duration_ms=duration_ms,
            ))

    def timed_out(self, job: ShadowJob) -> None:
        work: ShadowWork = job.payload
        self.recorder.shadow_timeout(work.rollout.name, work.version)
        self.telemetry.shadow_timed_out(job)

    def dropped(self, job: ShadowJob, reason: str) -> None:
        work: ShadowWork = job.payload
        self.recorder.shadow_drop(work.rollout.name, work.version, reason)
        self.telemetry.shadow_dropped(work, reason)
