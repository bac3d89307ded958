"""OpenTelemetry: spans, the evaluation event and metrics, on injected in-memory providers (never the globals)."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from flask_v2rollout import Fallback, V2Rollout
from flask_v2rollout.dispatch import qualified_name
from flask_v2rollout.telemetry import DURATION_BUCKETS_MS, SCHEMA_URL, configure_otlp

EVALUATION = "feature_flag.evaluation"


class Spans(InMemorySpanExporter):
    """In-memory exporter that can wait for a span (shadow spans end on other threads)."""

    def __init__(self) -> None:
        super().__init__()
        self._exported = threading.Condition()

    def export(self, spans: Any) -> Any:
        result = super().export(spans)
        with self._exported:
            self._exported.notify_all()
        return result

    def wait_for(self, name: str, timeout: float = 5.0) -> ReadableSpan:
        with self._exported:
            assert self._exported.wait_for(lambda: self.named(name), timeout), f"no span {name!r}"
        return self.named(name)[0]

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.get_finished_spans() if s.name == name]


@dataclass
class Otel:
    spans: Spans
    reader: InMemoryMetricReader
    logs: InMemoryLogRecordExporter
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider

    def extension(self) -> V2Rollout:
        return V2Rollout(tracer_provider=self.tracer_provider, meter_provider=self.meter_provider,
                         logger_provider=self.logger_provider)

    def metrics(self) -> dict[str, Any]:
        """Every metric collected now, by name (cumulative since the provider started)."""
        data = self.reader.get_metrics_data()
        if data is None:
            return {}
        return {m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}

    def evaluation_logs(self) -> list[Any]:
        return [r.log_record for r in self.logs.get_finished_logs() if r.log_record.event_name == EVALUATION]


@pytest.fixture
def otel() -> Iterator[Otel]:
    spans, reader, logs = Spans(), InMemoryMetricReader(), InMemoryLogRecordExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    meter_provider = MeterProvider([reader], shutdown_on_exit=False)
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    yield Otel(spans, reader, logs, tracer_provider, meter_provider, logger_provider)
    for provider in (tracer_provider, meter_provider, logger_provider):
        provider.shutdown()


@contextmanager
def flask_instrumented(app: Flask, otel: Otel) -> Iterator[None]:
    FlaskInstrumentor().instrument_app(app, tracer_provider=otel.tracer_provider)
    try:
        yield
    finally:
        FlaskInstrumentor().uninstrument_app(app)


def rollout_app(make_app: Callable[..., tuple[Flask, V2Rollout]], otel: Otel, v1: Callable[..., Any],
                v2: Callable[..., Any], config: dict[str, Any] | None = None, **flags: Any) -> tuple[Flask, V2Rollout]:
    """One rollout ``calc`` with these initial flags, on the in-memory providers."""
    ext = otel.extension()
    ext.register("calc", v1=v1, v2=v2)
    return make_app(ext, V2ROLLOUT_DEFAULTS=flags, **(config or {}))


def server_span(otel: Otel) -> ReadableSpan:
    (span,) = [s for s in otel.spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    return span


def attrs(item: Any) -> dict[str, Any]:
    """Attributes of a span, event or log record as a plain dict (the SDK types them Optional)."""
    return dict(item.attributes or {})


def points(metric: Any) -> dict[frozenset[tuple[str, Any]], Any]:
    return {frozenset(attrs(p).items()): p for p in metric.data.data_points}


def test_calculation_span_is_a_child_of_the_flask_server_span(make_app, otel: Otel) -> None:
    app, _ = rollout_app(make_app, otel, v1=lambda x: x, v2=lambda x: x * 10)
    with flask_instrumented(app, otel):
        assert app.test_client().get("/calc/2").get_json()["value"] == 2

    server = server_span(otel)
    calc = otel.spans.wait_for("v2rollout.calculate calc")
    assert calc.kind == SpanKind.INTERNAL
    assert calc.parent is not None and calc.parent.span_id == server.context.span_id
    assert calc.context.trace_id == server.context.trace_id
    scope = calc.instrumentation_scope
    assert scope is not None and (scope.name, scope.schema_url) == ("flask_v2rollout", SCHEMA_URL)
    assert calc.status.status_code == StatusCode.UNSET
    evaluation = {
        "feature_flag.key": "calc", "feature_flag.provider.name": "flask-v2rollout",
        "feature_flag.result.variant": "v1", "feature_flag.result.reason": "static", "feature_flag.version": "1",
        "v2rollout.assigned": "v1",
    }
    assert attrs(calc) == {
        **evaluation, "v2rollout.rollout": "calc", "v2rollout.outcome": "ok", "v2rollout.percentage": 0.0}
    assert calc.events == ()  # the evaluation event is a log record; the span event is an option
    (record,) = otel.evaluation_logs()  # the Logs API event, correlated with the calculation span
    assert attrs(record) == evaluation
    assert (record.trace_id, record.span_id) == (calc.context.trace_id, calc.context.span_id)


@pytest.mark.parametrize("percentage", [0, 100])
def test_the_evaluation_span_event_when_asked_for(make_app, otel: Otel, percentage: int) -> None:
    def v2(x: int) -> int:
        raise ValueError("no data")

    app, ext = rollout_app(make_app, otel, v1=lambda x: x, v2=v2, v2_rollout_percentage=percentage,
                           config={"V2ROLLOUT_OTEL_SPAN_EVENT": True})
    with app.app_context():
        ext.calculate("calc", 1, user_id="u1")
    calc = otel.spans.wait_for("v2rollout.calculate calc")
    (event,) = [e for e in calc.events if e.name == EVALUATION]
    (record,) = otel.evaluation_logs()
    assert attrs(event) == attrs(record)
    assert attrs(event)["feature_flag.result.reason"] == ("static" if percentage == 0 else "error")
    assert {k: v for k, v in attrs(calc).items() if k in attrs(event)} == attrs(event)


def test_calculators_own_spans_are_children_of_the_calculation_span(make_app, otel: Otel) -> None:
    tracer = otel.tracer_provider.get_tracer("host.db")

    def v1(x: int) -> int:
        with tracer.start_as_current_span("SELECT players", kind=SpanKind.CLIENT):
            return x

    app, ext = rollout_app(make_app, otel, v1=v1, v2=lambda x: x)
    with app.app_context():
        ext.calculate("calc", 1, user_id="u1")
    calc = otel.spans.wait_for("v2rollout.calculate calc")
    query = otel.spans.wait_for("SELECT players")
    assert query.parent is not None and query.parent.span_id == calc.context.span_id
    assert calc.parent is None  # no request: a root span


@pytest.mark.parametrize("opt_in", [False, True])
def test_split_reason_and_the_user_id_only_when_the_host_opts_in(make_app, otel: Otel, opt_in: bool) -> None:
    app, ext = rollout_app(make_app, otel, v1=lambda x: x, v2=lambda x: x, v2_rollout_percentage=50,
                           config={"V2ROLLOUT_OTEL_INCLUDE_USER_ID": opt_in})
    with app.app_context():
        outcome = ext.calculate("calc", 1, user_id="user-7")
    calc = otel.spans.wait_for("v2rollout.calculate calc")
    (record,) = otel.evaluation_logs()
    assert attrs(calc)["feature_flag.result.reason"] == "split"
    assert attrs(calc)["feature_flag.result.variant"] == outcome.version
    for attributes in (attrs(calc), attrs(record)):
        assert attributes.get("feature_flag.context.id") == ("user-7" if opt_in else None)


def test_v2_exception_serves_v1_and_marks_the_span_as_error(make_app, otel: Otel) -> None:
    def v2(x: int) -> int:
        raise ZeroDivisionError("bad data")

    app, ext = rollout_app(make_app, otel, v1=lambda x: x, v2=v2, v2_rollout_percentage=100)
    with app.app_context():
        outcome = ext.calculate("calc", 4, user_id="u1")
    assert (outcome.value, outcome.version) == (4, "v1")
    calc = otel.spans.wait_for("v2rollout.calculate calc")
    assert calc.status.status_code == StatusCode.ERROR
    attributes = attrs(calc)
    assert attributes["error.type"] == "ZeroDivisionError"
    assert attributes["feature_flag.result.variant"] == "v1"
    assert attributes["v2rollout.assigned"] == "v2"
    assert attributes["feature_flag.result.reason"] == "error"
    assert attributes["v2rollout.fallback_reason"] == "exception:ZeroDivisionError"
    assert attributes["v2rollout.outcome"] == "fallback"
    (exception,) = [e for e in calc.events if e.name == "exception"]
    assert attrs(exception)["exception.type"] == "ZeroDivisionError"
    assert attrs(exception)["exception.message"] == "bad data"
    assert attrs(otel.evaluation_logs()[0])["error.type"] == "ZeroDivisionError"


def test_fallback_raised_by_v2_is_a_default_not_an_error(make_app, otel: Otel) -> None:
    def v2(x: int) -> int:
        raise Fallback("insufficient weeks")

    app, ext = rollout_app(make_app, otel, v1=lambda x: x, v2=v2, v2_rollout_percentage=100)
    with app.app_context():
        ext.calculate("calc", 4, user_id="u1")
    calc = otel.spans.wait_for("v2rollout.calculate calc")
    assert calc.status.status_code == StatusCode.UNSET
    assert attrs(calc)["feature_flag.result.reason"] == "default"
    assert attrs(calc)["v2rollout.fallback_reason"] == "insufficient weeks"
    assert "error.type" not in attrs(calc)


class Boom(Exception):
    pass


def test_exception_reaching_the_caller_is_recorded_as_escaped(make_app, otel: Otel) -> None:
    def v1(x: int) -> int:
        raise Boom("v1 is broken too")

    app, ext = rollout_app(make_app, otel, v1=v1, v2=lambda x: x)
    with app.app_context(), pytest.raises(Boom):
        ext.calculate("calc", 1, user_id="u1")
    calc = otel.spans.wait_for("v2rollout.calculate calc")
    assert calc.status.status_code == StatusCode.ERROR
    assert attrs(calc)["error.type"] == qualified_name(Boom())
    assert attrs(calc)["v2rollout.outcome"] == "error"
    (exception,) = [e for e in calc.events if e.name == "exception"]
    assert attrs(exception)["exception.escaped"] == "True"
    (point,) = points(otel.metrics()["v2rollout.calculation.duration"]).values()
    assert attrs(point) == {"v2rollout.rollout": "calc", "v2rollout.version": "v1",
                                      "v2rollout.outcome": "error", "error.type": qualified_name(Boom())}


@pytest.mark.parametrize("instrumented", [True, False])
def test_shadow_span_is_linked_to_the_calculation_span_not_its_child(
        make_app, otel: Otel, instrumented: bool) -> None:
    app, ext = rollout_app(make_app, otel, v1=lambda x: float(x), v2=lambda x: float(x) + 2,
                           v2_shadow_mode_enabled=True)
    with flask_instrumented(app, otel) if instrumented else contextlib.nullcontext():
        assert app.test_client().get("/calc/3").get_json()["version"] == "v1"
    with app.app_context():
        assert ext.drain(5)
    calc = otel.spans.wait_for("v2rollout.calculate calc")
    shadow = otel.spans.wait_for("v2rollout.shadow calc")
    assert shadow.parent is None and shadow.context.trace_id != calc.context.trace_id
    (link,) = shadow.links  # to the span it shadows, whether or not the host traces its requests
    assert (link.context.trace_id, link.context.span_id) == (calc.context.trace_id, calc.context.span_id)
    if instrumented:
        assert calc.parent is not None and calc.parent.span_id == server_span(otel).context.span_id
    attributes = attrs(shadow)
    assert attributes.pop("v2rollout.shadow.queue_ms") >= 0
    assert attributes == {
        "v2rollout.rollout": "calc", "v2rollout.version": "v2", "v2rollout.shadow.served": "v1",
        "v2rollout.shadow.agreement": "CLOSE", "v2rollout.shadow.difference": 2.0,
        "v2rollout.shadow.difference_pct": pytest.approx(2 / 3 * 100), "v2rollout.shadow.timeout": False,
    }
    assert shadow.status.status_code == StatusCode.UNSET
    (comparisons,) = points(otel.metrics()["v2rollout.shadow.comparisons"]).values()
    assert comparisons.value == 1 and attrs(comparisons)["v2rollout.shadow.agreement"] == "CLOSE"


def test_shadow_v2_exception_is_recorded_on_the_shadow_span(make_app, otel: Otel) -> None:
    def v2(x: int) -> float:
        raise KeyError("week")

    app, ext = rollout_app(make_app, otel, v1=lambda x: float(x), v2=v2, v2_shadow_mode_enabled=True)
    with app.app_context():
        ext.calculate("calc", 1, user_id="u1")
        assert ext.drain(5)
    shadow = otel.spans.wait_for("v2rollout.shadow calc")
    assert shadow.status.status_code == StatusCode.ERROR
    assert attrs(shadow)["error.type"] == "KeyError"
    assert attrs(shadow)["v2rollout.shadow.agreement"] == "v2_error"
    (link,) = shadow.links  # no request span: the link is to the calculation, a root span
    assert link.context.span_id == otel.spans.wait_for("v2rollout.calculate calc").context.span_id
    assert [e.name for e in shadow.events] == ["exception"]


def test_shadow_timeout_ends_the_span_at_the_deadline_and_is_counted(make_app, otel: Otel) -> None:
    release = threading.Event()

    def v2(x: int) -> float:
        release.wait(30)
        return float(x)

    app, ext = rollout_app(make_app, otel, v1=lambda x: float(x), v2=v2, v2_shadow_mode_enabled=True,
                           config={"V2ROLLOUT_SHADOW_TIMEOUT_MS": 50})
    try:
        with app.app_context():
            ext.calculate("calc", 1, user_id="u1")
            shadow = otel.spans.wait_for("v2rollout.shadow calc")  # ended by the supervisor, v2 still blocked
            assert not release.is_set()
    finally:
        release.set()
    assert attrs(shadow)["v2rollout.shadow.timeout"] is True
    assert attrs(shadow)["error.type"] == "timeout"
    assert "v2rollout.shadow.agreement" not in attrs(shadow)
    assert shadow.status.status_code == StatusCode.ERROR
    assert shadow.end_time is not None and shadow.start_time is not None
    assert (shadow.end_time - shadow.start_time) / 1e9 >= 0.05  # ended at the deadline, not at once
    (timeouts,) = points(otel.metrics()["v2rollout.shadow.timeouts"]).values()
    assert timeouts.value == 1
    with app.app_context():
        assert ext.drain(5)
    assert len(otel.spans.named("v2rollout.shadow calc")) == 1


def test_drops_are_counted_and_noted_on_the_request_span(make_app, otel: Otel) -> None:
    release = threading.Event()

    def v2(x: int) -> float:
        release.wait(30)
        return float(x)

    app, ext = rollout_app(make_app, otel, v1=lambda x: float(x), v2=v2, v2_shadow_mode_enabled=True, config={
        "V2ROLLOUT_SHADOW_WORKERS": 1, "V2ROLLOUT_SHADOW_QUEUE_SIZE": 1, "V2ROLLOUT_SHADOW_TIMEOUT_MS": 60_000})
    try:
        with flask_instrumented(app, otel):
            client = app.test_client()
            for x in range(6):
                assert client.get(f"/calc/{x}").status_code == 200
    finally:
        release.set()
    with app.app_context():
        assert ext.drain(5)
    noted = [e for s in otel.spans.get_finished_spans() if s.kind == SpanKind.SERVER for e in s.events
             if e.name == "v2rollout.shadow.dropped"]
    (drops,) = points(otel.metrics()["v2rollout.shadow.drops"]).values()
    assert attrs(drops) == {"v2rollout.rollout": "calc", "v2rollout.version": "v2",
                                      "v2rollout.shadow.drop_reason": "queue_full"}
    assert drops.value == len(noted) >= 4  # six submits: at most one running and one queued


def test_metrics_after_a_known_sequence_of_calls(make_app, otel: Otel) -> None:
    def v2(x: int) -> int:
        if x == 1:
            raise Fallback("insufficient weeks")
        if x == 2:
            raise ValueError("no data")
        return x * 10

    app, ext = rollout_app(make_app, otel, v1=lambda x: x, v2=v2)
    with app.app_context():
        outcomes = [ext.calculate("calc", 0, user_id=f"u{i}") for i in range(3)]
        ext.set_flag("calc", "v2_rollout_percentage", 100, actor="test")
        outcomes += [ext.calculate("calc", x, user_id="u9") for x in (0, 0, 1, 2)]
        collected = otel.metrics()

    duration = collected["v2rollout.calculation.duration"]
    assert duration.unit == "ms"
    by_attributes = points(duration)
    base = {("v2rollout.rollout", "calc")}
    expected = {
        frozenset(base | {("v2rollout.version", "v1"), ("v2rollout.outcome", "ok")}): 3,
        frozenset(base | {("v2rollout.version", "v2"), ("v2rollout.outcome", "ok")}): 2,
        frozenset(base | {("v2rollout.version", "v1"), ("v2rollout.outcome", "fallback")}): 1,
        frozenset(base | {("v2rollout.version", "v1"), ("v2rollout.outcome", "fallback"),
                          ("error.type", "ValueError")}): 1,
    }
    assert {k: p.count for k, p in by_attributes.items()} == expected
    assert sum(p.sum for p in by_attributes.values()) == pytest.approx(sum(o.duration_ms for o in outcomes))
    assert all(tuple(p.explicit_bounds) == DURATION_BUCKETS_MS for p in by_attributes.values())

    fallbacks = {attrs(p)["v2rollout.fallback_reason"]: p.value
                 for p in collected["v2rollout.fallbacks"].data.data_points}
    assert fallbacks == {"insufficient weeks": 1, "exception:ValueError": 1}
    (percentage,) = collected["v2rollout.rollout.percentage"].data.data_points
    assert (attrs(percentage), percentage.value) == ({"v2rollout.rollout": "calc"}, 100.0)
    (failures,) = collected["v2rollout.flag_store.failures"].data.data_points
    assert failures.value == 0


def test_duration_histogram_counts_every_call_batched_off_the_request_path(make_app, otel: Otel) -> None:
    """Durations are recorded in batches (at a flush, at a collection): exported counts still equal the calls."""
    app, ext = rollout_app(make_app, otel, v1=lambda x: x, v2=lambda x: x, v2_rollout_percentage=50)
    threads, per_thread = 4, 500
    counted: list[float] = []
    start = threading.Barrier(threads + 1)

    def traffic(t: int) -> None:
        with app.app_context():
            start.wait(10)
            for i in range(per_thread):
                counted.append(ext.calculate("calc", i, user_id=f"u{t}-{i}").duration_ms)

    workers = [threading.Thread(target=traffic, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    start.wait(10)
    collections = []
    while any(w.is_alive() for w in workers):  # collect and flush while the calls go on
        collections.append(otel.metrics())
        with app.app_context():
            ext.flush()
    for w in workers:
        w.join(10)
    assert len(collections) >= 1
    by_attributes = points(otel.metrics()["v2rollout.calculation.duration"])
    assert sum(p.count for p in by_attributes.values()) == threads * per_thread == len(counted)
    assert sum(p.sum for p in by_attributes.values()) == pytest.approx(sum(counted))


def test_flag_store_failures_are_observed_and_the_reason_is_stale(make_app, otel: Otel, tmp_path: Path) -> None:
    app, ext = rollout_app(make_app, otel, v1=lambda x: x, v2=lambda x: x,
                           config={"V2ROLLOUT_DATABASE_URI": f"sqlite:///{tmp_path}/missing-dir/flags.db"})
    with app.app_context():
        assert ext.calculate("calc", 1, user_id="u1").version == "v1"
        failures = ext.health()["flag_store"]["failures"]
    assert failures >= 1
    assert attrs(otel.spans.wait_for("v2rollout.calculate calc"))["feature_flag.result.reason"] == "stale"
    (observed,) = otel.metrics()["v2rollout.flag_store.failures"].data.data_points
    assert observed.value == failures


def test_apps_sharing_a_meter_provider_are_all_observed(make_app, otel: Otel) -> None:
    apps = []
    for name, percentage in (("first", 10), ("second", 50)):
        ext = otel.extension()
        ext.register(name, v1=abs, v2=abs, defaults={"v2_rollout_percentage": percentage})
        app, _ = make_app(ext, instance=name)
        with app.app_context():
            ext.calculate(name, -1, user_id="u1")
        apps.append(app)
    gauge = otel.metrics()["v2rollout.rollout.percentage"]
    assert {attrs(p)["v2rollout.rollout"]: p.value for p in gauge.data.data_points} == {
        "first": 10.0, "second": 50.0}


def test_turned_off_by_config_emits_nothing(make_app, otel: Otel) -> None:
    app, ext = rollout_app(make_app, otel, v1=lambda x: x, v2=lambda x: x, config={"V2ROLLOUT_OTEL_ENABLED": False})
    with app.app_context():
        ext.calculate("calc", 1, user_id="u1")
    assert otel.spans.get_finished_spans() == () and otel.metrics() == {} and otel.evaluation_logs() == []


def test_core_never_imports_the_sdk(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys
        from flask import Flask
        from flask_v2rollout import V2Rollout
        app = Flask("core", instance_path={str(tmp_path)!r})
        ext = V2Rollout(app)
        ext.register("calc", v1=abs, v2=abs)
        with app.app_context():
            ext.calculate("calc", -1, user_id="u1")
        print(sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


_OTLP_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                   "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "OTEL_SERVICE_NAME",
                   "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER")


@pytest.fixture
def otlp_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in _OTLP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_configure_otlp_does_nothing_without_an_endpoint(otlp_env: pytest.MonkeyPatch) -> None:
    assert configure_otlp(set_global=False) is None
    otlp_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    otlp_env.setenv("OTEL_SDK_DISABLED", "true")
    assert configure_otlp(set_global=False) is None


def test_configure_otlp_sets_up_only_the_signals_with_an_endpoint(otlp_env: pytest.MonkeyPatch) -> None:
    otlp_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    providers = configure_otlp(service_name="from-code", set_global=False)
    assert providers is not None
    try:
        assert providers.meter_provider is None and providers.logger_provider is None
        assert providers.tracer_provider is not None
        assert providers.tracer_provider.resource.attributes["service.name"] == "from-code"
    finally:
        providers.shutdown()
    otlp_env.setenv("OTEL_SERVICE_NAME", "from-env")
    otlp_env.setenv("OTEL_TRACES_EXPORTER", "none")
    otlp_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    providers = configure_otlp(service_name="from-code", set_global=False)
    assert providers is not None
    try:
        assert providers.tracer_provider is None
        assert providers.meter_provider is not None and providers.logger_provider is not None
        assert providers.logger_provider.resource.attributes["service.name"] == "from-env"
    finally:
        providers.shutdown()


def test_configure_otlp_instruments_the_app_and_names_the_service_after_it(
        otlp_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    otlp_env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    app = Flask("svc_from_app", instance_path=str(tmp_path))
    providers = configure_otlp(app, set_global=False)
    assert providers is not None and providers.tracer_provider is not None
    try:
        assert app._is_instrumented_by_opentelemetry  # type: ignore[attr-defined]
        assert providers.tracer_provider.resource.attributes["service.name"] == "svc_from_app"
    finally:
        FlaskInstrumentor().uninstrument_app(app)
        providers.shutdown()


def test_global_providers_set_after_the_extension_are_used(tmp_path) -> None:
    # In a fresh interpreter: this test sets the global providers, which the others must never do.
    code = f"""
from flask import Flask
from flask_v2rollout import V2Rollout
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

app = Flask("late", instance_path={str(tmp_path)!r})
ext = V2Rollout(app)
ext.register("calc", v1=lambda x: x, v2=lambda x: x)
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
with app.app_context():
    ext.calculate("calc", 1, user_id="u")
print([s.name for s in exporter.get_finished_spans()])
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "['v2rollout.calculate calc']"
