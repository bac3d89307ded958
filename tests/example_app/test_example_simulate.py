"""The traffic generator against a real server on an ephemeral loopback port."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from example_app.simulate import is_loopback, simulate
from helpers import join

AppFactory = Callable[..., Flask]


@pytest.fixture
def server(make_app: AppFactory) -> Iterator[BaseWSGIServer]:
    app = make_app(V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 50, "v2_shadow_mode_enabled": False})
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    join(thread)
    srv.server_close()


def test_sends_the_requested_count_and_tallies_answers(server: BaseWSGIServer) -> None:
    url = f"http://127.0.0.1:{server.server_port}"
    report = simulate(url, ["Patrick Mahomes", "Josh Allen", "Nobody Special"], users=50, rps=1000, count=60, seed=3)
    assert report.requests == 60
    assert set(report.statuses) <= {"200", "404"} and report.statuses["200"] > 0
    assert report.statuses["404"] > 0  # the unknown player
    assert sum(report.versions.values()) == report.statuses["200"]
    assert set(report.versions) == {"v1", "v2"}  # 50 users at 50 %


def test_same_seed_sends_the_same_traffic(server: BaseWSGIServer) -> None:
    url = f"http://127.0.0.1:{server.server_port}"
    players = ["Patrick Mahomes", "Josh Allen", "Joe Burrow"]
    first = simulate(url, players, users=100, rps=1000, count=30, seed=9)
    second = simulate(url, players, users=100, rps=1000, count=30, seed=9)
    assert (first.versions, first.conversions) == (second.versions, second.conversions)


def test_a_set_stop_event_ends_it_before_any_request() -> None:
    stop = threading.Event()
    stop.set()
    report = simulate("http://127.0.0.1:9", ["Josh Allen"], stop=stop)
    assert report.requests == 0


def test_unreachable_server_is_counted_not_raised() -> None:
    report = simulate("http://127.0.0.1:9", ["Josh Allen"], rps=1000, count=2, timeout=1.0)
    assert report.statuses == {"error": 2}


def test_refuses_to_run_unbounded() -> None:
    with pytest.raises(ValueError, match="must end"):
        simulate("http://127.0.0.1:5000", ["Josh Allen"])


def test_refuses_a_remote_target_unless_allowed() -> None:
    with pytest.raises(ValueError, match="not a loopback address"):
        simulate("http://example.com", ["Josh Allen"], count=1)


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:5000", True),
        ("http://localhost:5000", True),
        ("http://[::1]:5000", True),
        ("http://127.8.9.10", True),
        ("http://10.0.0.5:5000", False),
        ("http://example.com", False),
    ],
)
def test_is_loopback(url: str, loopback: bool) -> None:
    assert is_loopback(url) is loopback


def test_cli_runs_against_a_server(make_app: AppFactory, server: BaseWSGIServer) -> None:
    result = make_app().test_cli_runner().invoke(
        args=["simulate", "--count", "5", "--rps", "1000", "--url", f"http://127.0.0.1:{server.server_port}"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("5 edge requests (200: 5)")


def test_cli_refuses_a_remote_target(make_app: AppFactory) -> None:
    result = make_app().test_cli_runner().invoke(args=["simulate", "--count", "1", "--url", "http://example.com"])
    assert result.exit_code == 1
    assert "not a loopback address" in result.output
