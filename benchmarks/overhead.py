"""Per-call cost of calculate() against calling the function directly, and against one bare SDK span.

Run: .venv/bin/python benchmarks/overhead.py [--calls N] [--rounds R]
Every path is timed once per round, the rounds interleaved (so a busy core slows every path alike), and
the median of the rounds is printed. Without an SDK: the cost the extension adds to a direct call. With the
OpenTelemetry SDK (spans through a BatchSpanProcessor to a discarding exporter, metrics into a
MeterProvider with a reader): calculate() against a bare ``start_as_current_span()`` around the same call —
the least any tracing of that call costs.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask

from flask_v2rollout import V2Rollout

try:  # the otlp extra
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
except ImportError:
    TracerProvider = None  # type: ignore[assignment,misc]

#: large enough that no span is dropped while a round runs (a dropped span costs less than an exported one)
QUEUE = 1 << 21


def v1(x: int) -> int:
    return x + 1


def v2(x: int) -> int:
    return x + 2


Group = tuple[Flask, Sequence[Callable[[], object]]]


def interleaved_us(groups: Sequence[Group], calls: int, rounds: int) -> list[float]:
    """Median over ``rounds`` of µs per call of each path; every round times every path once, in turn.

    A group's paths run inside one request of its app (assigned in ``preprocess_request``, as in a view).
    """
    samples: list[list[float]] = [[] for _, paths in groups for _ in paths]
    for _ in range(rounds):
        i = 0
        for app, paths in groups:
            with app.test_request_context("/"):
                app.preprocess_request()
                for fn in paths:
                    fn()  # the request's assignment is made before the clock starts
                    start = time.perf_counter()
                    for _ in range(calls):
                        fn()
                    samples[i].append((time.perf_counter() - start) / calls * 1e6)
                    i += 1
    return [statistics.median(s) for s in samples]


def make_app(name: str, **providers: Any) -> tuple[Flask, V2Rollout]:
    app = Flask(name, instance_path=tempfile.mkdtemp())
    app.secret_key = "bench"
    ext = V2Rollout(app, **providers)
    ext.register("bench", v1=v1, v2=v2)
    with app.app_context():
        ext.set_flag("bench", "v2_rollout_percentage", 10, actor="bench")
    return app, ext


def sdk_providers() -> tuple[Any, Any]:
    class Discard(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=QUEUE))
    return tracer_provider, MeterProvider([InMemoryMetricReader()], shutdown_on_exit=False)


def span_attributes() -> dict[str, Any]:
    """The attributes of the span one calculate() exports, from an app of its own with an in-memory exporter."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app, ext = make_app("bench-probe", tracer_provider=provider)
    with app.test_request_context("/"):
        app.preprocess_request()
        ext.calculate("bench", 1)
    (span,) = exporter.get_finished_spans()
    return dict(span.attributes or {})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    app, ext = make_app("bench")
    names = ["direct call v1(1)", "calculate() in a request (assigned)", "calculate(user_id=…) in a request"]
    groups: list[Group] = [(app, [
        lambda: v1(1), lambda: ext.calculate("bench", 1), lambda: ext.calculate("bench", 1, user_id="user-42")])]
    sdk = TracerProvider is not None
    if sdk:
        tracer_provider, meter_provider = sdk_providers()
        otel_app, otel_ext = make_app("bench-otel", tracer_provider=tracer_provider, meter_provider=meter_provider)
        tracer = tracer_provider.get_tracer("bench")

        def bare_span() -> None:
            with tracer.start_as_current_span("bench"):
                v1(1)

        ours = span_attributes()  # the attributes our span ends with (the OTLP test's set)

        def bare_span_with_attributes() -> None:
            with tracer.start_as_current_span("bench", attributes=ours):
                v1(1)

        names += ["bare SDK span around v1(1)", f"bare SDK span + the same {len(ours)} attributes",
                  "calculate() with the OTel SDK"]
        groups.append((otel_app, [bare_span, bare_span_with_attributes, lambda: otel_ext.calculate("bench", 1)]))
    times = interleaved_us(groups, args.calls, args.rounds)
    direct = times[0]
    print(f"{args.rounds} interleaved rounds of {args.calls} calls, medians")
    print(f"{'path':40} {'µs/call':>9} {'added µs':>9}")
    for name, us in zip(names, times, strict=True):
        print(f"{name:40} {us:9.3f} {us - direct:9.3f}")
    worst = max(times[1] - direct, times[2] - direct)
    print(f"added with no SDK: {times[1] - direct:.3f} µs in a request, {times[2] - direct:.3f} µs with user_id= "
          f"(goal ≤ 4 µs: {'met' if worst <= 4 else 'NOT met'})")
    if sdk:
        ratio = times[5] / times[3]
        verdict = "met" if ratio <= 1.3 else "NOT met"
        print(f"calculate() with the SDK / bare SDK span: {ratio:.2f}x (goal ≤ 1.3x: {verdict}); "
              f"/ bare span with the same attributes: {times[5] / times[4]:.2f}x; "
              f"the attributes alone: {times[4] / times[3]:.2f}x")


if __name__ == "__main__":
    main()
