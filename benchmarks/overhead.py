"""Per-call cost of calculate() against calling the function directly.

Run: .venv/bin/python benchmarks/overhead.py [--calls N]
Prints µs per call for each way and the cost added by the extension, measured in one run; the last row
has the OpenTelemetry SDK on (spans through a BatchSpanProcessor to a discarding exporter, metrics into a
MeterProvider with a reader), compared with the same call without an SDK.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

from flask import Flask

from flask_v2rollout import V2Rollout

try:  # the otlp extra
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
except ImportError:
    TracerProvider = None  # type: ignore[assignment,misc]


def v1(x: int) -> int:
    return x + 1


def v2(x: int) -> int:
    return x + 2


def per_call_us(fn: Callable[[], object], calls: int, repeats: int = 5) -> float:
    """Best-of-``repeats`` median µs per call (robust to a busy core)."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def sdk_app() -> tuple[Flask, V2Rollout]:
    """The benchmark app with telemetry on: SDK providers injected, spans exported to nowhere."""

    class Discard(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard()))
    meter_provider = MeterProvider([InMemoryMetricReader()], shutdown_on_exit=False)
    app = Flask("bench-otel", instance_path=tempfile.mkdtemp())
    app.secret_key = "bench"
    ext = V2Rollout(app, tracer_provider=tracer_provider, meter_provider=meter_provider)
    ext.register("bench", v1=v1, v2=v2)
    with app.app_context():
        ext.set_flag("bench", "v2_rollout_percentage", 10, actor="bench")
    return app, ext


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    app = Flask("bench", instance_path=tmp)
    app.secret_key = "bench"
    ext = V2Rollout(app)
    ext.register("bench", v1=v1, v2=v2)
    with app.app_context():
        ext.set_flag("bench", "v2_rollout_percentage", 10, actor="bench")
    rows = []
    with app.test_request_context("/"):
        app.preprocess_request()  # assignment, as in a real request
        direct = per_call_us(lambda: v1(1), args.calls)
        in_request = per_call_us(lambda: ext.calculate("bench", 1), args.calls)
        with_user = per_call_us(lambda: ext.calculate("bench", 1, user_id="user-42"), args.calls)
    rows.append(("direct call v1(1)", direct, 0.0))
    rows.append(("calculate() in a request (assigned)", in_request, in_request - direct))
    rows.append(("calculate(user_id=…) (flags + md5)", with_user, with_user - direct))
    worst = max(r[2] for r in rows)  # the goal is for telemetry off
    if TracerProvider is not None:
        otel_app, otel_ext = sdk_app()
        with otel_app.test_request_context("/"):
            otel_app.preprocess_request()
            with_sdk = per_call_us(lambda: otel_ext.calculate("bench", 1), args.calls)
        rows.append(("calculate() with OTel SDK spans+metrics", with_sdk, with_sdk - direct))
    print(f"{'path':40} {'µs/call':>9} {'added µs':>9} {'ratio':>7}")
    for name, us, added in rows:
        print(f"{name:40} {us:9.3f} {added:9.3f} {us / direct:7.1f}x")
    print(f"goal: ≤ 15 µs added per call with telemetry off; worst measured {worst:.3f} µs")
    if TracerProvider is not None:
        print(f"OTel SDK on / off: {with_sdk / in_request:.2f}x ({with_sdk - in_request:+.3f} µs per call)")


if __name__ == "__main__":
    main()
