"""End to end: configure_otlp's real OTLP/HTTP exporters deliver spans, metrics and events to a receiver."""
from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry import _logs, metrics, trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor

from flask_v2rollout import V2Rollout
from flask_v2rollout.telemetry import configure_otlp
from helpers import build_app

from .support import OtlpReceiver, Span

_CLEARED = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SDK_DISABLED",
            "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_LOGS_EXPORTER")


def _globals() -> tuple[object, object, object]:
    return trace.get_tracer_provider(), metrics.get_meter_provider(), _logs.get_logger_provider()


def test_calculation_and_shadow_spans_reach_an_otlp_receiver(
        otlp_receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "v2rollout-e2e")
    before = _globals()
    providers = configure_otlp(set_global=False)  # injected below: the process's globals stay untouched
    assert providers is not None and providers.tracer_provider is not None
    try:
        ext = V2Rollout(tracer_provider=providers.tracer_provider, meter_provider=providers.meter_provider,
                        logger_provider=providers.logger_provider)
        ext.register("calc", v1=lambda x: float(x), v2=lambda x: float(x) + 0.5)
        app, _ = build_app(tmp_path / "instance", ext, V2ROLLOUT_DEFAULTS={"v2_shadow_mode_enabled": True})
        FlaskInstrumentor().instrument_app(app, tracer_provider=providers.tracer_provider)
        try:
            assert app.test_client().get("/calc/4").get_json()["version"] == "v1"
            with app.app_context():
                assert ext.drain(5)
        finally:
            FlaskInstrumentor().uninstrument_app(app)
        assert providers.tracer_provider.force_flush(10_000)
        wanted = {"v2rollout.calculate calc", "v2rollout.shadow calc"}
        spans = otlp_receiver.wait_for_spans(lambda got: wanted <= {s["name"] for s in got}, 10)
    finally:
        providers.shutdown()  # final metric collection and log flush are exported here
    assert _globals() == before

    def one(name: str) -> Span:
        (span,) = [s for s in spans if s["name"] == name]
        return span

    calc, shadow = one("v2rollout.calculate calc"), one("v2rollout.shadow calc")
    (server,) = [s for s in spans if s["kind"] == 2]
    assert {s["resource"]["service.name"] for s in spans} == {"v2rollout-e2e"}
    assert calc["parent_span_id"] == server["span_id"] and calc["trace_id"] == server["trace_id"]
    assert calc["kind"] == 1 and calc["status_code"] == 0
    assert {k: calc["attributes"][k] for k in ("feature_flag.key", "feature_flag.provider.name",
                                                "feature_flag.result.variant", "feature_flag.result.reason",
                                                "v2rollout.assigned", "v2rollout.outcome")} == {
        "feature_flag.key": "calc", "feature_flag.provider.name": "flask-v2rollout",
        "feature_flag.result.variant": "v1", "feature_flag.result.reason": "static",
        "v2rollout.assigned": "v1", "v2rollout.outcome": "ok",
    }
    assert set(calc["attributes"]) == {
        "feature_flag.key", "feature_flag.provider.name", "feature_flag.result.variant",
        "feature_flag.result.reason", "feature_flag.version", "v2rollout.rollout", "v2rollout.assigned",
        "v2rollout.outcome", "v2rollout.percentage"}
    assert calc["events"] == []  # the evaluation event is the log record below (a span event only on request)
    assert shadow["parent_span_id"] == "" and shadow["trace_id"] != server["trace_id"]
    # linked to the calculation it shadows (not the request's span, which a host may not trace)
    assert shadow["links"] == [{"trace_id": calc["trace_id"], "span_id": calc["span_id"], "attributes": {}}]
    assert shadow["attributes"]["v2rollout.shadow.agreement"] == "EXACT"
    assert shadow["attributes"]["v2rollout.shadow.difference"] == 0.5

    exported = {m.name for request in otlp_receiver.metrics for rm in request.resource_metrics
                for sm in rm.scope_metrics for m in sm.metrics}
    assert {"v2rollout.calculation.duration", "v2rollout.shadow.comparisons",
            "v2rollout.rollout.percentage", "v2rollout.flag_store.failures"} <= exported
    durations = [p for request in otlp_receiver.metrics for rm in request.resource_metrics
                 for sm in rm.scope_metrics for m in sm.metrics if m.name == "v2rollout.calculation.duration"
                 for p in m.histogram.data_points]
    assert durations and durations[-1].count == 1  # cumulative: the one call, recorded off the request path
    events = [r for request in otlp_receiver.logs for rl in request.resource_logs for sl in rl.scope_logs
              for r in sl.log_records if r.event_name == "feature_flag.evaluation"]
    assert len(events) == 1 and events[0].span_id.hex() == calc["span_id"]
