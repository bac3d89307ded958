"""Our per-call decision and our off-path shadow against peer SDKs, measured in one run, all local.

Run: .venv/bin/pip install -r benchmarks/requirements.txt && .venv/bin/python benchmarks/peers.py

1. Decision + dispatch at a 10 % rollout for the same users: ``calculate(user_id=…)`` and bare
   ``bucketing.assign()`` against local evaluation in GrowthBook (features given as a dict), Unleash
   (bootstrapped from a dict, ``fetch_toggles=False``, no registration, no metrics) and LaunchDarkly
   (``TestData``, ``send_events=False``); each peer evaluates its flag and calls the chosen function.
2. What the caller waits for when v2 (a 20 ms sleep) is compared with v1: laboratory runs the
   candidate inline; our shadow mode submits it to the background runner.
3. With the OpenTelemetry SDK on (a global TracerProvider, BatchSpanProcessor to a discarding exporter):
   ``calculate(user_id=…)`` against a bare SDK span around ``assign()`` + call (the least any tracing of
   that decision costs) and LaunchDarkly's OpenTelemetry hook (``ldotel``, ``add_spans=True``).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import laboratory
from flask import Flask
from growthbook import GrowthBook
from ldclient import Context, LDClient
from ldclient.config import Config
from ldclient.integrations.test_data import FlagBuilder, TestData
from ldotel.tracing import Hook, HookOptions
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from UnleashClient import UnleashClient
from UnleashClient.cache import FileCache

from flask_v2rollout import V2Rollout
from flask_v2rollout.bucketing import assign

USERS = [f"user-{i}" for i in range(10_000)]
PASSES = 3  # each user evaluated this many times per repeat
REPEATS = 5
SHADOW_CALLS = 300
Decide = Callable[[str], int]


def v1(x: int) -> int:
    return x + 1


def v2(x: int) -> int:
    return x + 2


def slow_v2(x: int) -> int:
    time.sleep(0.02)
    return x + 1


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


def per_call_us(deciders: list[Decide]) -> list[float]:
    """Median over ``REPEATS`` of µs per call, every user decided ``PASSES`` times; repeats interleaved."""
    samples: list[list[float]] = [[] for _ in deciders]
    for _ in range(REPEATS):
        for decide, out in zip(deciders, samples, strict=True):
            start = time.perf_counter()
            for _ in range(PASSES):
                for uid in USERS:
                    decide(uid)
            out.append((time.perf_counter() - start) / (PASSES * len(USERS)) * 1e6)
    return [statistics.median(s) for s in samples]


def timed(out: list[float], call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """Call once and append the milliseconds it took to ``out``."""
    start = time.perf_counter()
    call(*args, **kwargs)
    out.append((time.perf_counter() - start) * 1000)


def v2_share(decide: Decide) -> float:
    """Share of ``USERS`` served v2 (v1(0) = 1, v2(0) = 2)."""
    return sum(decide(uid) == 2 for uid in USERS) / len(USERS)


def ours(defaults: dict[str, Any]) -> tuple[Flask, V2Rollout]:
    """A fresh app with the extension and these ``V2ROLLOUT_DEFAULTS``; the caller registers rollouts."""
    app = Flask("bench", instance_path=tempfile.mkdtemp())
    app.secret_key = "bench"
    app.config["V2ROLLOUT_DEFAULTS"] = defaults
    return app, V2Rollout(app)


def growthbook() -> GrowthBook:
    """GrowthBook evaluating locally: features as a dict, no client key, so nothing is fetched."""
    rule = {"id": "fr_bench", "force": True, "coverage": 0.1, "hashAttribute": "id", "seed": "bench",
            "hashVersion": 2}
    return GrowthBook(features={"bench": {"defaultValue": False, "rules": [rule]}})


def unleash() -> UnleashClient:
    """Unleash bootstrapped from a dict; offline connector (reloads the local cache), no HTTP at all."""
    cache = FileCache("bench", directory=tempfile.mkdtemp())
    cache.bootstrap_from_dict({"version": 2, "features": [{
        "name": "bench", "enabled": True, "strategies": [{
            "name": "flexibleRollout", "parameters": {"rollout": "10", "stickiness": "userId", "groupId": "bench"},
        }],
    }]})
    client = UnleashClient(url="http://127.0.0.1:9/api", app_name="bench", disable_metrics=True,
                           disable_registration=True, cache=cache)
    client.initialize_client(fetch_toggles=False)
    return client


class RolloutFlag(FlagBuilder):
    """TestData's builder has no percentage rollout: this one serves ``True`` to 10 % by context key."""

    def _build(self, version: int) -> dict:
        flag = super()._build(version)
        flag["fallthrough"] = {"rollout": {"variations": [{"variation": 0, "weight": 10_000},
                                                          {"variation": 1, "weight": 90_000}]}}
        return flag


def launchdarkly(hooks: list[Any] | None = None) -> LDClient:
    """LaunchDarkly fed by TestData: no streaming, polling or events."""
    td = TestData.data_source()
    td.update(RolloutFlag("bench").boolean_flag())
    return LDClient(config=Config("bench-sdk-key", update_processor_class=td, send_events=False, hooks=hooks or []))


def lab_call(x: int) -> int:
    """A Scientist-style experiment: v1 serves, slow_v2 runs inline, in random order."""
    experiment = laboratory.Experiment(name="bench")
    experiment.control(v1, args=[x])
    experiment.candidate(slow_v2, args=[x])
    return experiment.conduct()


def decisions(gb: GrowthBook, unl: UnleashClient, ld: LDClient) -> None:
    """Part 1: µs per decision + dispatch, ratio peer / ours."""
    app, ext = ours({"v2_rollout_percentage": 10})
    ext.register("bench", v1=v1, v2=v2)

    def gb_decide(uid: str) -> int:
        gb.set_attributes({"id": uid})
        return (v2 if gb.is_on("bench") else v1)(0)

    paths: list[tuple[str, Decide]] = [
        ("ours: calculate(user_id=…)", lambda uid: ext.calculate("bench", 0, user_id=uid).value),
        ("ours: bucketing.assign() + call", lambda uid: (v2 if assign(uid, 10) == "v2" else v1)(0)),
        ("GrowthBook is_on() + call", gb_decide),
        ("Unleash is_enabled() + call", lambda uid: (v2 if unl.is_enabled("bench", {"userId": uid}) else v1)(0)),
        ("LaunchDarkly variation() + call",
         lambda uid: (v2 if ld.variation("bench", Context.create(uid), False) else v1)(0)),
    ]
    print(f"\n1. decision + dispatch at 10 %: {len(USERS)} users × {PASSES} passes, median of {REPEATS} repeats")
    print(f"  {'path':34} {'v2 share':>8} {'µs/call':>8} {'÷ calculate':>12} {'÷ assign':>9}")
    with app.app_context():
        shares = [v2_share(decide) for _, decide in paths]
        times = per_call_us([decide for _, decide in paths])
    ours_us, bucket_us = times[0], times[1]
    for (name, _), share, us in zip(paths, shares, times, strict=True):
        print(f"  {name:34} {share:8.1%} {us:8.3f} {us / ours_us:11.2f}x {us / bucket_us:8.2f}x")


def shadow() -> None:
    """Part 2: caller-side latency of laboratory (inline candidate) vs our shadow (off the path)."""
    app, ext = ours({"v2_shadow_mode_enabled": True})
    ext.register("bench", v1=v1, v2=slow_v2)
    ext.register("reference", v1=v1, v2=slow_v2, defaults={"v2_shadow_mode_enabled": False})
    lab: list[float] = []
    on: list[float] = []
    off: list[float] = []
    with app.app_context():
        # each of our calls follows a laboratory call (≥ 20 ms idle), alternating shadow on / off,
        # so both of ours see the same conditions
        for i in range(2 * SHADOW_CALLS):
            timed(lab, lab_call, i)
            name, out = ("bench", on) if i % 2 else ("reference", off)
            timed(out, ext.calculate, name, i, user_id=USERS[i])
        drained = ext.drain(30)
        stats = ext.stats("bench").get("v2", {})
    print("\n2. v2 = 20 ms sleep; latency as the caller sees it")
    print(f"  {'path':34} {'calls':>6} {'p50 ms':>8} {'p95 ms':>8}")
    for name, out in (("laboratory.Experiment.conduct()", lab), ("ours: calculate(), shadow on, 0 %", on),
                      ("ours: calculate(), shadow off", off)):
        print(f"  {name:34} {len(out):6} {pct(out, 50):8.3f} {pct(out, 95):8.3f}")
    print(f"  ratio laboratory / ours (shadow on): p50 {pct(lab, 50) / pct(on, 50):.0f}x, "
          f"p95 {pct(lab, 95) / pct(on, 95):.0f}x")
    done = sum(stats.get("shadow", {}).values())
    dropped = sum(stats.get("shadow_drop", {}).values())
    timed_out = sum(stats.get("shadow_timeout", {}).values())
    print(f"  our shadow runs after drain(): completed {done:.0f}, dropped (queue full, counted) {dropped:.0f}, "
          f"timed out {timed_out:.0f}; drained {'fully' if drained else 'NOT fully'}")


class Discard(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def traced() -> None:
    """Part 3: the SDK on. Sets the global TracerProvider, so it runs last."""
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=1 << 21))
    trace.set_tracer_provider(provider)
    tracer = provider.get_tracer("bench")
    app, ext = ours({"v2_rollout_percentage": 10})
    ext.register("bench", v1=v1, v2=v2)
    ld = launchdarkly([Hook(HookOptions(add_spans=True))])

    def bare(uid: str) -> int:
        with tracer.start_as_current_span("bench"):
            return (v2 if assign(uid, 10) == "v2" else v1)(0)

    paths: list[tuple[str, Decide]] = [
        ("bare SDK span: assign() + call", bare),
        ("ours: calculate(user_id=…)", lambda uid: ext.calculate("bench", 0, user_id=uid).value),
        ("LaunchDarkly + ldotel add_spans", lambda uid: (v2 if ld.variation("bench", Context.create(uid), False)
                                                         else v1)(0)),
    ]
    print(f"\n3. OpenTelemetry SDK on: {len(USERS)} users × {PASSES} passes, median of {REPEATS} repeats")
    print(f"  {'path':34} {'µs/call':>8} {'÷ bare span':>12}")
    try:
        with app.app_context():
            times = per_call_us([decide for _, decide in paths])
    finally:
        ld.close()
    for (name, _), us in zip(paths, times, strict=True):
        print(f"  {name:34} {us:8.3f} {us / times[0]:11.2f}x")
    print(f"  ours / bare span {times[1] / times[0]:.2f}x (goal ≤ 1.3x); ours / LaunchDarkly's hook "
          f"{times[1] / times[2]:.2f}x")


def main() -> None:
    print(f"Python {sys.version.split()[0]}; measured: flask_v2rollout {version('flask_v2rollout')}, "
          f"growthbook {version('growthbook')}, UnleashClient {version('UnleashClient')}, "
          f"launchdarkly-server-sdk {version('launchdarkly-server-sdk')}, "
          f"launchdarkly-server-sdk-otel {version('launchdarkly-server-sdk-otel')}, laboratory {version('laboratory')}")
    print("all local: GrowthBook without client key, Unleash bootstrapped (fetch_toggles=False, no registration "
          "or metrics), LaunchDarkly on TestData (send_events=False)")
    gb, unl, ld = growthbook(), unleash(), launchdarkly()
    try:
        decisions(gb, unl, ld)
    finally:
        gb.destroy()
        unl.destroy()
        ld.close()
    shadow()
    traced()


if __name__ == "__main__":
    main()
