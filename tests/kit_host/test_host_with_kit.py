"""Tests a host writes with the kit only: pytest-flask's client, the marker and the fixtures."""
from __future__ import annotations

import pytest
from host_app import rollout

from flask_v2rollout.testing import force_version

pytestmark = pytest.mark.usefixtures("v2rollout_shadow_sync")


@pytest.mark.v2rollout(pricing="v2")
def test_marker_pins_v2(client) -> None:
    assert client.get("/price/book?user=alice").get_json() == {"price": 10.5, "version": "v2"}


def test_unpinned_users_follow_the_flags(client) -> None:
    # The rollout starts at 0 %: without a pin everyone gets v1, whatever ran before.
    assert client.get("/price/book?user=alice").get_json() == {"price": 10.0, "version": "v1"}


def test_force_version_in_a_block(app, client) -> None:
    with force_version(app, "pricing", "v2"):
        assert client.get("/price/book?user=bob").get_json()["version"] == "v2"
        assert client.get("/price/rare?user=bob").get_json() == {"price": 10.0, "version": "v1"}  # fallback
    assert client.get("/price/book?user=bob").get_json()["version"] == "v1"


def test_shadow_runs_before_the_response_is_checked(client, v2rollout_signals) -> None:
    client.get("/price/book?user=carol")
    compared = v2rollout_signals.named("shadow_compared")
    assert len(compared) == 1 and compared[0]["comparison"].agreement == "EXACT"


def test_conversions_and_metrics_with_a_controlled_clock(app, client, v2rollout_clock) -> None:
    with force_version(app, "pricing", "v2"):
        client.get("/price/book?user=dave")
        client.post("/buy?user=dave")
    with app.app_context():
        rollout.flush()
        now = rollout.metrics("pricing", "5m")["arms"]["v2"]
        v2rollout_clock.advance(hours=1)
        later = rollout.metrics("pricing", "5m")["arms"]["v2"]
    assert now["calculations"] >= 1 and now["converted_users"] >= 1
    assert later["calculations"] == 0  # an hour later the 5-minute window is empty


@pytest.mark.v2rollout(pricing="v2")
def test_spans_and_metrics_in_memory(client, v2rollout_telemetry) -> None:
    client.get("/price/book?user=erin")
    (span,) = v2rollout_telemetry.spans_named("v2rollout.calculate pricing")
    assert span.attributes["feature_flag.result.variant"] == "v2"
    (point,) = v2rollout_telemetry.metric_points("v2rollout.calculation.duration")
    assert point.count == 1
