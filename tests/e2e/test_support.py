"""The e2e infrastructure itself: each fixture does what later e2e tests rely on."""
from __future__ import annotations

import gzip
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from sqlalchemy.pool import NullPool

from .support import GunicornServer, OtlpReceiver, PostgresServer, drive


def test_postgres_survives_stop_and_start(postgres_server: PostgresServer) -> None:
    uri = postgres_server.create_database("support_restart")
    engine = sa.create_engine(uri, poolclass=NullPool)  # every connect is a real one
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE kept (id int PRIMARY KEY, note text)"))
        conn.execute(sa.text("INSERT INTO kept VALUES (1, 'before the outage')"))

    postgres_server.stop()
    try:
        with pytest.raises(sa.exc.OperationalError):
            engine.connect()
    finally:
        postgres_server.start()  # the session's other tests need it back either way

    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT note FROM kept WHERE id = 1")).scalar_one() == "before the outage"
    assert postgres_server.uri.startswith(f"postgresql+psycopg://postgres@127.0.0.1:{postgres_server.port}/")


def test_gunicorn_serves_from_forked_workers_and_stops_gracefully(
        gunicorn_server: Callable[..., GunicornServer]) -> None:
    server = gunicorn_server("tests.e2e.tiny_app:app", workers=2)
    workers = server.worker_pids()
    assert len(workers) == 2 and server.pid not in workers

    results = drive(server.url, [("GET", "/pid", None, None)] * 50)
    assert all(status == 200 for status, _ in results)
    served_by = {body["pid"] for _, body in results}
    assert 1 <= len(served_by) and served_by <= set(workers)

    assert server.stop() == 0
    assert server.worker_pids() == []
    assert not any(Path(f"/proc/{pid}").exists() for pid in [server.pid, *workers])
    out = server.stdout_path.read_text()
    assert all(f"atexit {pid}" in out for pid in workers), out  # SIGTERM lets workers exit normally


def test_drive_refuses_non_loopback_urls() -> None:
    with pytest.raises(ValueError):
        drive("http://example.com", [("GET", "/", None, None)])


def test_otlp_receiver_decodes_exported_spans(otlp_receiver: OtlpReceiver) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "e2e-support"}))
    exporter = OTLPSpanExporter(endpoint=otlp_receiver.endpoint + "/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("e2e")
    try:
        with tracer.start_as_current_span("elsewhere") as elsewhere:
            linked = elsewhere.get_span_context()
        with tracer.start_as_current_span("parent", kind=trace.SpanKind.SERVER) as parent:
            link = trace.Link(linked, attributes={"why": "batch"})
            with tracer.start_as_current_span("child", links=[link], attributes={"calc.version": "v2"}) as child:
                child.add_event("fallback", {"reason": "insufficient weeks"})
        assert provider.force_flush()
    finally:
        provider.shutdown()

    spans = otlp_receiver.wait_for_spans(lambda spans: {"parent", "child"} <= {s["name"] for s in spans}, 5)
    by_name = {s["name"]: s for s in spans}
    p, c = by_name["parent"], by_name["child"]
    assert p["span_id"] == format(parent.get_span_context().span_id, "016x")
    assert p["parent_span_id"] == "" and p["kind"] == trace.SpanKind.SERVER.value + 1  # proto counts from 1
    assert c["trace_id"] == p["trace_id"] and c["parent_span_id"] == p["span_id"]
    assert c["attributes"] == {"calc.version": "v2"}
    assert c["events"] == [{"name": "fallback", "attributes": {"reason": "insufficient weeks"}}]
    assert c["links"] == [{"trace_id": format(linked.trace_id, "032x"), "span_id": format(linked.span_id, "016x"),
                           "attributes": {"why": "batch"}}]
    assert c["resource"]["service.name"] == "e2e-support"


def test_otlp_receiver_accepts_gzipped_metrics(otlp_receiver: OtlpReceiver) -> None:
    message = ExportMetricsServiceRequest()
    message.resource_metrics.add().resource.attributes.add(key="service.name").value.string_value = "e2e"
    request = urllib.request.Request(
        otlp_receiver.endpoint + "/v1/metrics", data=gzip.compress(message.SerializeToString()), method="POST",
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    assert otlp_receiver.metrics == [message]
    otlp_receiver.clear()
    assert otlp_receiver.metrics == []
