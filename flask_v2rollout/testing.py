"""pytest helpers for apps that use Flask-V2Rollout (a ``pytest11`` plugin).

Nothing here runs unless a test asks for it: a fixture by name, or the
``v2rollout`` marker. Works with pytest-flask's ``app`` fixture (the fixtures
below take the app from it) and, through the plain functions, with any app.

* ``force_version(app, "pricing", "v2")`` / ``@pytest.mark.v2rollout(pricing="v2")``
  — pin a version whatever the flags say; undone afterwards.
* ``v2rollout_shadow_sync`` — shadow work runs on the calling thread, so it has
  happened by the time ``calculate()`` returns.
* ``v2rollout_clock`` — a controllable clock for metrics windows, gates and the
  autopilot: ``clock.advance(hours=72)``.
* ``v2rollout_telemetry`` / ``capture_telemetry(app)`` — in-memory span exporter
  and metric reader wired into the extension (never the global providers);
  ``spans_named(...)``, ``metric_points(...)``.
* ``record_signals()`` / ``v2rollout_signals`` — capture the extension's signals.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask

from . import signals as _signals
from .runtime import Runtime

MARKER = "v2rollout"
_SIGNALS = {
    name: value for name, value in vars(_signals).items()
    if hasattr(value, "connect") and hasattr(value, "send")
}


def _state(app: Flask) -> Runtime:
    try:
        runtime: Runtime = app.extensions["v2rollout"]
        return runtime
    except KeyError:
        raise RuntimeError("V2Rollout is not initialised on this app (call rollout.init_app(app)).") from None


@contextmanager
def force_version(app: Flask, rollout: str, version: str) -> Iterator[None]:
    """Serve ``version`` of ``rollout`` to every user of ``app`` inside the block."""
    if version not in ("v1", "v2"):
        raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")
    runtime = _state(app)
    runtime.registry.get(rollout)
    forced = runtime.pipeline.forced
    previous = forced.get(rollout)
    forced[rollout] = version
    try:
        yield
    finally:
        if previous is not None:
            forced[rollout] = previous
        else:
            forced.pop(rollout, None)


@contextmanager
def shadow_sync(app: Flask) -> Iterator[None]:
    """Run shadow work on the calling thread inside the block."""
    runner = _state(app).shadow
    previous, runner.synchronous = runner.synchronous, True
    try:
        yield
    finally:
        runner.synchronous = previous


class Clock:
    """A wall clock that moves only when told to."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 0.0, *, minutes: float = 0.0, hours: float = 0.0, days: float = 0.0) -> float:
        self.now += seconds + 60 * minutes + 3600 * hours + 86400 * days
        return self.now


@contextmanager
def use_clock(app: Flask, clock: Clock) -> Iterator[Clock]:
    """Let ``clock`` drive the app's metrics, windows, gates and autopilot."""
    wall = _state(app).clock
    previous, wall.source = wall.source, clock
    try:
        yield clock
    finally:
        wall.source = previous


@dataclass
class SignalLog:
    """Signals received, in order: ``(signal_name, sender, kwargs)``."""

    events: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for n, _, kwargs in self.events if n == name]


@contextmanager
def record_signals(app: Flask | None = None) -> Iterator[SignalLog]:
    """Capture every Flask-V2Rollout signal (of ``app`` only, when given) inside the block."""
    log = SignalLog()
    receivers = []
    for name, signal in _SIGNALS.items():
        def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
            log.events.append((_name, sender, kwargs))
        receivers.append((signal, receiver))
        if app is None:
            signal.connect(receiver, weak=False)
        else:
            signal.connect(receiver, sender=app, weak=False)
    try:
        yield log
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver)


@dataclass
class TelemetryCapture:
    """In-memory spans and metrics of one app's extension (SDK providers, never the globals)."""

    exporter: Any
    reader: Any
    tracer_provider: Any
    meter_provider: Any

    def spans(self) -> list[Any]:
        return list(self.exporter.get_finished_spans())

    def spans_named(self, name: str) -> list[Any]:
        return [span for span in self.spans() if span.name == name]

    def metric_points(self, name: str) -> list[Any]:
        """Data points of metric ``name`` collected now."""
        data = self.reader.get_metrics_data()
        points = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        points.extend(metric.data.data_points)
        return points


@contextmanager
def capture_telemetry(app: Flask) -> Iterator[TelemetryCapture]:
    """Wire in-memory OpenTelemetry providers into ``app``'s extension inside the block (needs opentelemetry-sdk)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from .telemetry import Telemetry

    state = _state(app)
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])
    previous = state.use_telemetry(Telemetry(
        enabled=True, include_user_id=state.telemetry.include_user_id, span_event=state.telemetry.span_event,
        store=state.store,
        rollouts=state.registry.names, shadow=state.shadow,
        tracer_provider=tracer_provider, meter_provider=meter_provider,
    ))
    try:
        yield TelemetryCapture(exporter, reader, tracer_provider, meter_provider)
    finally:
        state.use_telemetry(previous)
        tracer_provider.shutdown()
        meter_provider.shutdown()


# -- pytest fixtures and marker ------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{MARKER}(**versions): pin rollout versions for this test, e.g. {MARKER}(pricing='v2')"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        names: list[str] | None = getattr(item, "fixturenames", None)  # pytest.Function has them
        if item.get_closest_marker(MARKER) is not None and names is not None and "_v2rollout_marker" not in names:
            names.append("_v2rollout_marker")


@pytest.fixture
def _v2rollout_marker(request: pytest.FixtureRequest) -> Iterator[None]:
    app = request.getfixturevalue("app")
    pins: dict[str, str] = {}
    for marker in reversed(list(request.node.iter_markers(MARKER))):
        pins.update(marker.kwargs)
    with _pinned(app, pins):
        yield


@contextmanager
def _pinned(app: Flask, pins: dict[str, str]) -> Iterator[None]:
    if not pins:
        yield
        return
    (name, version), *rest = pins.items()
    with force_version(app, name, version), _pinned(app, dict(rest)):
        yield


@pytest.fixture
def v2rollout_shadow_sync(app: Flask) -> Iterator[None]:
    """Shadow work runs before ``calculate()`` returns, for the whole test."""
    with shadow_sync(app):
        yield


@pytest.fixture
def v2rollout_clock(app: Flask) -> Iterator[Clock]:
    """A :class:`Clock` driving the app's metrics and gates, starting at the real time."""
    with use_clock(app, Clock()) as clock:
        yield clock


@pytest.fixture
def v2rollout_telemetry(app: Flask) -> Iterator[TelemetryCapture]:
    """In-memory spans and metrics of the app's extension for the test: ``.spans_named(...)``."""
    with capture_telemetry(app) as capture:
        yield capture


@pytest.fixture
def v2rollout_signals(app: Flask) -> Iterator[SignalLog]:
    """Every signal the app's extension sends during the test."""
    with record_signals(app) as log:
        yield log
