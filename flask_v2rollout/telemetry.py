"""OpenTelemetry: calculation and shadow spans, the ``feature_flag.evaluation`` event, metric instruments.

One ``calculate()`` costs about one SDK span: the span starts with the attributes of the expected result (the
assigned version answered), so only a call that ends otherwise sets attributes again; the evaluation event is a
log record (emitted while a LoggerProvider listens) and a span event only when asked for; the duration
histogram is recorded in batches off the request path (at each metrics flush, and when a reader collects).

The core needs ``opentelemetry-api`` only. Providers are injected (``V2Rollout(tracer_provider=…, …)``) or
are the globals, reached through the API's proxies so a host may set them after creating the extension.
Only :func:`configure_otlp` imports the SDK and the OTLP exporters (the ``otlp`` extra).

Names follow the feature-flag semantic conventions v1.44: one ``calculate()`` is one evaluation of the flag
``feature_flag.key`` = the rollout, whose variant is the version served. Our own attributes are ``v2rollout.*``.
See docs/observability.md for every name.
"""
from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata as _dist
from typing import TYPE_CHECKING, Any

from opentelemetry import _logs, metrics, trace
from opentelemetry import context as otel_context
from opentelemetry._logs._internal import ProxyLoggerProvider as _ProxyLoggerProvider
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, StatusCode

from .dispatch import Outcome, qualified_name
from .metrics.recorder import reason_code

if TYPE_CHECKING:
    from flask import Flask
    from opentelemetry.sdk._logs import LoggerProvider as SdkLoggerProvider
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    from .compare import Comparison
    from .flags import FlagSnapshot, FlagStore
    from .shadow import ShadowJob, ShadowRunner, ShadowWork

SCOPE = "flask_v2rollout"
SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"
PROVIDER_NAME = "flask-v2rollout"
EVALUATION_EVENT = "feature_flag.evaluation"
DROPPED_EVENT = "v2rollout.shadow.dropped"

# Semantic-convention attributes (feature flags, errors).
FF_KEY = "feature_flag.key"
FF_PROVIDER = "feature_flag.provider.name"
FF_VARIANT = "feature_flag.result.variant"
FF_REASON = "feature_flag.result.reason"
FF_CONTEXT_ID = "feature_flag.context.id"
FF_VERSION = "feature_flag.version"
ERROR_TYPE = "error.type"
# Ours.
ROLLOUT = "v2rollout.rollout"
VERSION = "v2rollout.version"
ASSIGNED = "v2rollout.assigned"
OUTCOME = "v2rollout.outcome"
FALLBACK_REASON = "v2rollout.fallback_reason"
PERCENTAGE = "v2rollout.percentage"
SERVED = "v2rollout.shadow.served"
QUEUE_MS = "v2rollout.shadow.queue_ms"
AGREEMENT = "v2rollout.shadow.agreement"
DIFFERENCE = "v2rollout.shadow.difference"
DIFFERENCE_PCT = "v2rollout.shadow.difference_pct"
TIMEOUT = "v2rollout.shadow.timeout"
DROP_REASON = "v2rollout.shadow.drop_reason"

#: ``v2rollout.outcome``: the assigned version answered / v1 answered for v2 / an exception reached the caller.
OK, FALLBACK, ERROR = "ok", "fallback", "error"

#: Histogram boundaries (ms) from 0.1 ms to 10 s, about 2.5 per decade.
DURATION_BUCKETS_MS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
                       5000.0, 10000.0)

_ATTR_CACHE_MAX = 1024  # distinct attribute sets kept per app; beyond (free-text fallback reasons) built per call
#: durations held per attribute set between two batches; past it a call records at once (nothing is dropped)
_PENDING_MAX = 100_000

try:
    _VERSION = _dist.version("Flask-V2Rollout")
except _dist.PackageNotFoundError:  # running from a source tree that was never installed
    _VERSION = "0+unknown"


def result_reason(outcome: Outcome, flags: FlagSnapshot) -> str:
    """``feature_flag.result.reason`` of one call (semconv well-known values)."""
    if outcome.raised is not None or outcome.error is not None:
        return "error"  # an exception: v1 served in its place, or it reached the caller
    if outcome.fallback_reason is not None:
        return "default"  # v2 declined (Fallback): the pre-configured v1 answered
    if flags.stale:
        return "stale"  # flag store failing: last-known flags
    if outcome.user_id is None:
        return "default"  # no user to bucket: v1
    return "static" if flags.percentage <= 0 or flags.percentage >= 100 else "split"


def _classify(outcome: Outcome) -> tuple[str, str | None]:
    """(``v2rollout.outcome``, ``error.type``) of one call."""
    if outcome.raised is not None:
        return ERROR, qualified_name(outcome.raised)
    if outcome.fallback_reason is not None:
        return FALLBACK, outcome.error_type
    return OK, None


class _Durations:
    """``v2rollout.calculation.duration`` values waiting to be recorded: one ``record()`` per call, batched.

    A call appends its duration to the list of its attribute set (no lock: ``list.append`` is atomic);
    :meth:`record` hands every waiting value to the histogram, so exported counts and sums are exactly
    those of one ``record()`` per call, and the request path never runs the SDK's measurement code.
    """

    def __init__(self, histogram: metrics.Histogram) -> None:
        self.histogram = histogram
        self._pending: dict[tuple[str, str, str, str | None], tuple[dict[str, str], list[float]]] = {}
        self._draining = threading.Lock()

    def add(self, rollout: str, version: str, kind: str, error_type: str | None, ms: float) -> None:
        entry = self._pending.get((rollout, version, kind, error_type))
        if entry is None:
            attrs = {ROLLOUT: rollout, VERSION: version, OUTCOME: kind}
            if error_type:
                attrs[ERROR_TYPE] = error_type
            if len(self._pending) >= _ATTR_CACHE_MAX:  # free-text error types: record at once
                self.histogram.record(ms, attrs)
                return
            entry = self._pending.setdefault((rollout, version, kind, error_type), (attrs, []))
        attrs, values = entry
        if len(values) >= _PENDING_MAX:
            self.histogram.record(ms, attrs)
        else:
            values.append(ms)

    def record(self) -> None:
        """Record every waiting duration (the flusher, and a reader's collection, call this)."""
        with self._draining:
            for attrs, values in list(self._pending.values()):
                n = len(values)
                if not n:
                    continue
                batch = values[:n]
                del values[:n]  # appends made meanwhile stay, after these n
                record = self.histogram.record
                for ms in batch:
                    record(ms, attrs)


class _Instruments:
    """The instruments of one MeterProvider, shared by every app that uses it.

    An SDK meter returns the first instrument registered under a name and ignores the callbacks given
    later, so apps cannot each register observable instruments: they join ``sources`` instead.
    """

    def __init__(self, provider: metrics.MeterProvider | None) -> None:
        self.provider = provider  # keeps id(provider) unique while this registry entry lives
        self.sources: weakref.WeakSet[Telemetry] = weakref.WeakSet()
        meter = metrics.get_meter(SCOPE, _VERSION, provider, SCHEMA_URL)
        self.durations = _Durations(meter.create_histogram(
            "v2rollout.calculation.duration", unit="ms",
            description="Duration of calculate(): the served version, including a failed v2 before a fallback.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_MS,
        ))
        self.fallbacks = meter.create_counter(
            "v2rollout.fallbacks", unit="{fallback}", description="v1 served to a v2-assigned user, by reason.")
        self.comparisons = meter.create_counter(
            "v2rollout.shadow.comparisons", unit="{comparison}", description="Shadow runs compared, by agreement.")
        self.drops = meter.create_counter(
            "v2rollout.shadow.drops", unit="{run}", description="Shadow runs dropped before running, by reason.")
        self.timeouts = meter.create_counter(
            "v2rollout.shadow.timeouts", unit="{run}", description="Shadow runs discarded at their timeout.")
        meter.create_observable_counter(
            "v2rollout.flag_store.failures", [self._failures], unit="{failure}",
            description="Failed reads of the flags from SQL (last-known flags served).")
        meter.create_observable_gauge(
            "v2rollout.rollout.percentage", [self._percentages], unit="%",
            description="Current v2_rollout_percentage of each rollout.")

    def _failures(self, _options: CallbackOptions) -> Iterable[Observation]:
        # A reader's collection runs the callbacks before it reads the synchronous instruments: the durations
        # batched since the last flush are recorded now, so this export already counts every call.
        self.durations.record()
        yield Observation(sum(source.store.failures for source in list(self.sources)))

    def _percentages(self, _options: CallbackOptions) -> Iterable[Observation]:
        for source in list(self.sources):
            yield from source.percentages()


_REGISTRY_LOCK = threading.Lock()
_BY_PROVIDER: weakref.WeakValueDictionary[int, _Instruments] = weakref.WeakValueDictionary()
_GLOBAL_INSTRUMENTS: _Instruments | None = None  # on the global (proxy) meter provider
#: Live telemetry of every app, for the exit hook of configure_otlp.
_LIVE: weakref.WeakSet[Telemetry] = weakref.WeakSet()


def _globals_are_noop() -> bool:
    """True while no SDK has been set as the global tracer, meter and logger provider."""
    return (
        isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        and isinstance(metrics.get_meter_provider(), _ProxyMeterProvider)
        and isinstance(_logs.get_logger_provider(), _ProxyLoggerProvider)
    )


def _instruments_for(provider: metrics.MeterProvider | None) -> _Instruments:
    global _GLOBAL_INSTRUMENTS
    with _REGISTRY_LOCK:
        if provider is None:
            if _GLOBAL_INSTRUMENTS is None:
                _GLOBAL_INSTRUMENTS = _Instruments(None)
            return _GLOBAL_INSTRUMENTS
        found = _BY_PROVIDER.get(id(provider))
        if found is None or found.provider is not provider:
            found = _BY_PROVIDER[id(provider)] = _Instruments(provider)
        return found


class Telemetry:
    """Spans, events and metrics of one app (``_State.telemetry``); cheap when nothing listens."""

    def __init__(
        self, *, enabled: bool, include_user_id: bool, store: FlagStore, rollouts: Callable[[], Iterable[str]],
        shadow: ShadowRunner, tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None, logger_provider: _logs.LoggerProvider | None = None,
        span_event: bool = False,
    ) -> None:
        self.include_user_id = include_user_id
        #: also put the evaluation on the span as a ``feature_flag.evaluation`` span event (older viewers)
        self.span_event = span_event
        self.store = store
        self._rollouts = rollouts
        self._shadow = shadow
        self._tracer = trace.get_tracer(SCOPE, _VERSION, tracer_provider, SCHEMA_URL)
        #: nothing injected: the globals decide, and while they are the API's no-op proxies
        #: ``calculate()`` skips spans and metrics altogether
        self._follows_globals = tracer_provider is None and meter_provider is None and logger_provider is None
        self._noop_until = float("-inf")
        self._logger = _logs.get_logger(SCOPE, _VERSION, logger_provider, SCHEMA_URL)
        #: no LoggerProvider injected: while the global one is the API's proxy, nothing listens for events
        self._logs_follow_global = logger_provider is None
        self._logs_quiet_until = float("-inf")
        instruments = _instruments_for(meter_provider) if enabled else None
        self._instruments = instruments
        self._names: dict[str, tuple[str, dict[str, str]]] = {}
        self._attrs: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._expected_attrs: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any]]] = {}
        self._open_shadow: dict[int, Span] = {}  # id(job) -> span, until the run or its timeout ends it
        if instruments is not None:
            instruments.sources.add(self)
            _LIVE.add(self)

    # -- calculate() ----------------------------------------------------------------------------
    def calculate(
        self, rollout: str, flags: FlagSnapshot, assigned: str, user_id: str | None, call: Callable[[], Outcome],
    ) -> tuple[Outcome, SpanContext | None]:
        """Run ``call`` (``dispatch.run``) with ``v2rollout.calculate <rollout>`` as the current span.

        Returns the Outcome and the span's context (for the link of a shadow run), None when nothing traces.
        """
        instruments = self._instruments
        if instruments is None or (self._follows_globals and self._globals_noop()):
            return call(), None
        name, key_attrs = self._per_rollout(rollout)
        start_attrs, evaluation = self._expected(rollout, key_attrs, flags, assigned, user_id)
        span = self._tracer.start_span(name, kind=SpanKind.INTERNAL, attributes=start_attrs)
        if span.is_recording():
            token = otel_context.attach(trace.set_span_in_context(span))  # calculators' spans become children
            try:
                outcome = call()
                kind, error_type = _classify(outcome)
                if kind != OK:
                    evaluation = self._unexpected(span, key_attrs, flags, outcome, kind, error_type)
                if self.span_event:
                    span.add_event(EVALUATION_EVENT, evaluation)
                if self._logs_listen():
                    self._logger.emit(event_name=EVALUATION_EVENT, attributes=evaluation)  # correlated with the span
            finally:
                otel_context.detach(token)
                span.end()
        else:
            outcome = call()
            kind, error_type = _classify(outcome)
            if self._logs_listen():
                if kind != OK:
                    evaluation = {**key_attrs, **self._result(flags, outcome, error_type)}
                self._logger.emit(event_name=EVALUATION_EVENT, attributes=evaluation)
        instruments.durations.add(rollout, outcome.version, kind, error_type, outcome.duration_ms)
        if outcome.fallback_reason is not None:
            reason = reason_code(outcome.fallback_reason)  # a bounded set of values for a metric attribute
            instruments.fallbacks.add(
                1, self._cached(("fallback", rollout, reason), lambda: {ROLLOUT: rollout, FALLBACK_REASON: reason}))
        return outcome, span.get_span_context()

    def quiet(self) -> bool:
        """True when :meth:`calculate` would only run the call (telemetry off, or no SDK behind the globals)."""
        if self._instruments is None:
            return True
        if not self._follows_globals:
            return False
        return time.monotonic() < self._noop_until or self._globals_noop()  # the cached answer, inline

    def _expected(
        self, rollout: str, key_attrs: dict[str, str], flags: FlagSnapshot, assigned: str, user_id: str | None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(span start attributes, evaluation attributes) if the assigned version answers, built once per case.

        The reason follows :func:`result_reason` for a call with no exception and no fallback.
        """
        key = (rollout, assigned, flags.version, flags.stale, flags.percentage, user_id is None)
        found = self._expected_attrs.get(key)
        if found is None:
            if flags.stale:
                reason = "stale"
            elif user_id is None:
                reason = "default"
            else:
                reason = "static" if flags.percentage <= 0 or flags.percentage >= 100 else "split"
            evaluation: dict[str, Any] = {**key_attrs, FF_VARIANT: assigned, FF_REASON: reason, ASSIGNED: assigned}
            if flags.version is not None:
                evaluation[FF_VERSION] = str(flags.version)
            found = ({**evaluation, ROLLOUT: rollout, OUTCOME: OK, PERCENTAGE: flags.percentage}, evaluation)
            if len(self._expected_attrs) < _ATTR_CACHE_MAX:
                self._expected_attrs[key] = found
        if self.include_user_id and user_id is not None:  # personal data, opted in: one copy per call
            return {**found[0], FF_CONTEXT_ID: user_id}, {**found[1], FF_CONTEXT_ID: user_id}
        return found

    def _unexpected(
        self, span: Span, key_attrs: dict[str, str], flags: FlagSnapshot, outcome: Outcome, kind: str,
        error_type: str | None,
    ) -> dict[str, Any]:
        """A fallback or an exception: overwrite the expected result on the span; returns the evaluation."""
        result = self._result(flags, outcome, error_type)
        span.set_attributes({**result, OUTCOME: kind})
        if outcome.error is not None and outcome.error is not outcome.raised:
            span.record_exception(outcome.error)
        if outcome.raised is not None:
            span.record_exception(outcome.raised, escaped=True)
        if error_type is not None:
            span.set_status(StatusCode.ERROR, f"v2 raised {error_type}; v1 served" if kind == FALLBACK else error_type)
        return {**key_attrs, **result}

    def record_durations(self) -> None:
        """Hand the batched calculation durations to the histogram (called before each metrics flush)."""
        if self._instruments is not None:
            self._instruments.durations.record()

    def _result(self, flags: FlagSnapshot, outcome: Outcome, error_type: str | None) -> dict[str, Any]:
        """The evaluation event's attributes after the flag's key and provider (all on the calculation span)."""
        attrs: dict[str, Any] = {
            FF_VARIANT: outcome.version, FF_REASON: result_reason(outcome, flags), ASSIGNED: outcome.assigned,
        }
        if flags.version is not None:
            attrs[FF_VERSION] = str(flags.version)
        if self.include_user_id and outcome.user_id is not None:
            attrs[FF_CONTEXT_ID] = outcome.user_id
        if outcome.fallback_reason is not None:
            attrs[FALLBACK_REASON] = outcome.fallback_reason
        if error_type is not None:
            attrs[ERROR_TYPE] = error_type
        return attrs

    def _logs_listen(self) -> bool:
        """Does a LoggerProvider want the evaluation event? The global proxy's answer is kept for a second."""
        if self._logs_follow_global:
            now = time.monotonic()
            if now < self._logs_quiet_until:
                return False
            if isinstance(_logs.get_logger_provider(), _ProxyLoggerProvider):
                self._logs_quiet_until = now + 1.0
                return False
        return self._logger.enabled(event_name=EVALUATION_EVENT)

    def _globals_noop(self) -> bool:
        """:func:`_globals_are_noop`, asked at most once a second (each provider lookup costs ~1 µs)."""
        now = time.monotonic()
        if now < self._noop_until:
            return True
        if _globals_are_noop():
            self._noop_until = now + 1.0
            return True
        return False

    def _per_rollout(self, rollout: str) -> tuple[str, dict[str, str]]:
        """(span name, the flag's key attributes), built once per rollout."""
        found = self._names.get(rollout)
        if found is None:
            key_attrs = {FF_KEY: rollout, FF_PROVIDER: PROVIDER_NAME}
            found = self._names[rollout] = (f"v2rollout.calculate {rollout}", key_attrs)
        return found

    def _cached(self, key: tuple[Any, ...], build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """One attribute dict per distinct key, so the hot path allocates none."""
        attrs = self._attrs.get(key)
        if attrs is None:
            attrs = build()
            if len(self._attrs) < _ATTR_CACHE_MAX:
                self._attrs[key] = attrs
        return attrs

    # -- shadow runs ------------------------------------------------------------------------------
    @contextmanager
    def shadow_span(self, job: ShadowJob) -> Iterator[None]:
        """``v2rollout.shadow <rollout>``, current while the run executes; a root span linked to the calculation.

        Not a child: the request has ended. The link names the ``v2rollout.calculate`` span whose call this
        run shadows, so the pair is found in a viewer whether or not the host traces its requests. A run that
        times out is ended by :meth:`shadow_timed_out` at the deadline (``v2rollout.shadow.timeout=true``),
        whatever the stuck thread does later.
        """
        if self._instruments is None:
            yield
            return
        work: ShadowWork = job.payload
        shadowed = work.span
        span = self._tracer.start_span(
            f"v2rollout.shadow {work.rollout.name}", context=otel_context.Context(), kind=SpanKind.INTERNAL,
            links=[Link(shadowed)] if shadowed is not None and shadowed.is_valid else None,
            attributes={ROLLOUT: work.rollout.name, VERSION: work.version, SERVED: work.primary.version,
                        QUEUE_MS: max(0.0, (job.started - work.submitted) * 1000.0)},
        )
        key = id(job)
        if span.is_recording():
            self._open_shadow[key] = span
        try:
            with trace.use_span(span, end_on_exit=False):
                yield
        finally:
            if self._open_shadow.pop(key, None) is span:  # else the timeout ended it (or nothing records)
                if job.timed_out:  # timed out before the span was registered: ended late
                    _mark_timeout(span)
                span.end()

    def shadow_failed(self, exc: BaseException) -> None:
        """The shadow run raised (inside :meth:`shadow_span`): record it on the run's span."""
        span = trace.get_current_span()
        if self._instruments is not None and span.is_recording():
            span.record_exception(exc)
            span.set_attribute(ERROR_TYPE, qualified_name(exc))
            span.set_status(StatusCode.ERROR, qualified_name(exc))

    def shadow_compared(self, work: ShadowWork, comparison: Comparison) -> None:
        """Count the agreement; put it on the run's span (current inside :meth:`shadow_span`)."""
        instruments = self._instruments
        if instruments is None:
            return
        rollout, version, agreement = work.rollout.name, work.version, comparison.agreement
        instruments.comparisons.add(1, self._cached(("compare", rollout, version, agreement), lambda: {
            ROLLOUT: rollout, VERSION: version, AGREEMENT: agreement}))
        span = trace.get_current_span()
        if span.is_recording():
            attrs: dict[str, Any] = {AGREEMENT: agreement, TIMEOUT: False}
            if comparison.difference is not None:
                attrs[DIFFERENCE] = comparison.difference
                attrs[DIFFERENCE_PCT] = comparison.difference_pct
            span.set_attributes(attrs)

    def shadow_timed_out(self, job: ShadowJob) -> None:
        """Count the timeout and end the run's span now (called by the runner's supervisor)."""
        instruments = self._instruments
        if instruments is None:
            return
        work: ShadowWork = job.payload
        rollout, version = work.rollout.name, work.version
        instruments.timeouts.add(1, self._cached(("run", rollout, version), lambda: {
            ROLLOUT: rollout, VERSION: version}))
        span = self._open_shadow.pop(id(job), None)
        if span is not None:
            _mark_timeout(span)
            span.end()

    def shadow_dropped(self, work: ShadowWork, reason: str) -> None:
        """Count a run that never ran; note it on the current (request) span when one records."""
        instruments = self._instruments
        if instruments is None:
            return
        rollout, version = work.rollout.name, work.version
        attrs = self._cached(("drop", rollout, version, reason), lambda: {
            ROLLOUT: rollout, VERSION: version, DROP_REASON: reason})
        instruments.drops.add(1, attrs)
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(DROPPED_EVENT, attrs)

    # -- observable instruments / exit ------------------------------------------------------------------
    def percentages(self) -> Iterator[Observation]:
        """Each rollout's percentage from the store's cache (at most one SELECT per TTL; never raises)."""
        for name in list(self._rollouts()):
            yield Observation(self.store.get(name).percentage, {ROLLOUT: name})

    def finish_shadow_work(self) -> None:
        """At exit, before the providers flush: let queued shadow runs end (bounded) so their spans go out."""
        self._shadow.shutdown()


def _mark_timeout(span: Span) -> None:
    span.set_attributes({TIMEOUT: True, ERROR_TYPE: "timeout"})
    span.set_status(StatusCode.ERROR, "shadow run exceeded V2ROLLOUT_SHADOW_TIMEOUT_MS")


# -- export -----------------------------------------------------------------------------------------------


@dataclass
class OtlpProviders:
    """The SDK providers :func:`configure_otlp` built; a signal without an endpoint is ``None``."""

    tracer_provider: SdkTracerProvider | None
    meter_provider: SdkMeterProvider | None
    logger_provider: SdkLoggerProvider | None
    _stopped: bool = field(default=False, repr=False)

    def shutdown(self) -> None:
        """Export what is buffered and stop the providers (idempotent; also done at exit)."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self._at_exit)
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            if provider is not None:
                provider.shutdown()

    def _at_exit(self) -> None:
        for telemetry in list(_LIVE):  # shadow runs still queued end first, so their spans are exported
            telemetry.finish_shadow_work()
        self.shutdown()


def _exports(signal: str) -> bool:
    """An OTLP endpoint is configured for ``signal`` and its exporter is not turned off."""
    if os.environ.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
                or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def configure_otlp(
    app: Flask | None = None, *, service_name: str | None = None, set_global: bool = True,
) -> OtlpProviders | None:
    """Export traces, metrics and the evaluation events over OTLP/HTTP, configured by the standard variables.

    Does nothing and returns ``None`` unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` or a per-signal
    ``OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT`` is set (or when ``OTEL_SDK_DISABLED=true``); a
    signal with neither, or with ``OTEL_{SIGNAL}_EXPORTER=none``, is not set up. The exporters read their
    headers, timeout, compression and TLS variables themselves. ``service_name`` (default: the app's
    name) applies only when neither ``OTEL_SERVICE_NAME`` nor ``OTEL_RESOURCE_ATTRIBUTES`` names the service.

    ``set_global`` makes the providers the process's globals (which every extension without injected
    providers uses); with ``False`` pass them to ``V2Rollout(...)`` yourself. ``app`` is instrumented with
    opentelemetry-instrumentation-flask when installed (call this before the app serves). At exit, shadow
    work is finished first, then the batch processors flush; call ``shutdown()`` to do it earlier.
    Needs the ``otlp`` extra.
    """
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    signals = {signal: _exports(signal) for signal in ("traces", "metrics", "logs")}
    if not any(signals.values()):
        return None
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    name = service_name or (app.name if app is not None else None)
    if name and SERVICE_NAME not in OTELResourceDetector().detect().attributes:
        resource = resource.merge(Resource({SERVICE_NAME: name}))
    # Our exit hook shuts them down, after the shadow work whose spans they must still export.
    tracer_provider = meter_provider = logger_provider = None
    if signals["traces"]:
        tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if signals["metrics"]:
        reader = PeriodicExportingMetricReader(OTLPMetricExporter())
        meter_provider = MeterProvider([reader], resource=resource, shutdown_on_exit=False)
    if signals["logs"]:
        logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
    providers = OtlpProviders(tracer_provider, meter_provider, logger_provider)
    if set_global:
        if tracer_provider is not None:
            trace.set_tracer_provider(tracer_provider)
        if meter_provider is not None:
            metrics.set_meter_provider(meter_provider)
        if logger_provider is not None:
            _logs.set_logger_provider(logger_provider)
    if app is not None:
        _instrument_flask(app, providers)
    atexit.register(providers._at_exit)
    return providers


def _instrument_flask(app: Flask, providers: OtlpProviders) -> None:
    """Server spans (the calculation span's parent) when opentelemetry-instrumentation-flask is installed."""
    try:
        from opentelemetry.instrumentation.flask import FlaskInstrumentor
    except ImportError:
        return
    FlaskInstrumentor().instrument_app(  # type: ignore[no-untyped-call]
        app, tracer_provider=providers.tracer_provider, meter_provider=providers.meter_provider)


__all__ = ["Telemetry", "configure_otlp", "OtlpProviders", "DURATION_BUCKETS_MS"]
