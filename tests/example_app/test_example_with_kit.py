"""The example app tested the way the testing kit (flask_v2rollout.testing) is meant to be used."""
from __future__ import annotations

import random

import pytest
from flask import Flask

from example_app.datagen import quarterbacks
from example_app.rollout import ROLLOUT, rollout
from flask_v2rollout.testing import force_version

MAHOMES = {"player": "Patrick Mahomes", "opponent": "LAC"}


def edges(client, body=MAHOMES, user="user-1") -> dict:
    response = client.post("/api/edges", json=body, headers={"X-User-Id": user})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


@pytest.mark.v2rollout(qb_td="v2")
def test_v2_served_when_pinned(client) -> None:
    answer = edges(client)
    assert answer["calculator_version"] == "v2"
    assert answer["metadata"]["data_source"] == "play_by_play+player_game_log"


def test_v1_without_a_pin(client) -> None:
    assert edges(client)["calculator_version"] == "v1"  # the test app starts at 0 %


def test_thin_data_falls_back_even_when_v2_is_pinned(app: Flask, client) -> None:
    with force_version(app, ROLLOUT, "v2"):
        answers = [
            client.post("/api/edges", json={"player": qb.name, "opponent": "LAC"}).get_json()
            for qb in quarterbacks(random.Random(0)) if qb.role == "backup"
        ]
    fell_back = [a for a in answers if a.get("metadata", {}).get("fallback_to_v1")]
    assert fell_back, "the generated 2025 data has backups with too few weeks"
    for answer in fell_back:
        assert answer["calculator_version"] == "v1"
        assert answer["metadata"]["fallback_reason"].startswith("insufficient")


@pytest.fixture
def shadow_app(make_app) -> Flask:
    return make_app(V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 0, "v2_shadow_mode_enabled": True})


def test_shadow_runs_synchronously_under_the_kit(shadow_app: Flask) -> None:
    from flask_v2rollout.testing import record_signals, shadow_sync

    with shadow_sync(shadow_app), record_signals(shadow_app) as log:
        answer = edges(shadow_app.test_client())
    assert answer["calculator_version"] == "v1"
    compared = log.named("shadow_compared")
    assert len(compared) == 1
    assert compared[0]["comparison"].agreement in ("EXACT", "CLOSE", "MODERATE")
    with shadow_app.app_context():
        rollout.flush()
        shadow = rollout.metrics(ROLLOUT, "5m")["shadow"]["v2"]
    assert shadow["compared"] == 1
