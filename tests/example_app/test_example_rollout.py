"""The qb_td rollout as users see it through POST /api/edges."""
from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from flask import Flask

from example_app.rollout import MAX_USER_ID_LENGTH, user_from_gateway

AppFactory = Callable[..., Flask]

#: A quarterback with plenty of weeks 3–7 data, so v2 never falls back for him.
STEADY_QB = {"player": "Patrick Mahomes", "opponent": "LAC"}


def runbook_v2(uid: str, percentage: int) -> bool:
    return int(hashlib.md5(uid.encode()).hexdigest(), 16) % 100 < percentage


def ask(app: Flask, uid: str, body: dict[str, str] = STEADY_QB) -> dict:
    response = app.test_client().post("/api/edges", json=body, headers={"X-User-Id": uid})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_ten_percent_assigns_exactly_the_runbook_md5_buckets(make_app: AppFactory) -> None:
    app = make_app(V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 10, "v2_shadow_mode_enabled": False})
    client = app.test_client()
    served: dict[str, str] = {}
    for n in range(1000):
        uid = f"user-{n}"
        answer = client.post("/api/edges", json=STEADY_QB, headers={"X-User-Id": uid}).get_json()
        assert answer["metadata"]["fallback_to_v1"] is False
        assert answer["calculator_version"] == answer["metadata"]["calculator_version"]
        assert answer["metadata"]["assigned_version"] == answer["calculator_version"]
        served[uid] = answer["calculator_version"]

    v2_users = {uid for uid, version in served.items() if version == "v2"}
    assert v2_users == {uid for uid in served if runbook_v2(uid, 10)}
    assert 70 <= len(v2_users) <= 130  # ~10 % of 1 000


def test_v2_answer_carries_v2_metadata(make_app: AppFactory) -> None:
    app = make_app(V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 100})
    answer = ask(app, "user-1")
    assert answer["calculator_version"] == "v2"
    meta = answer["metadata"]
    assert meta["data_source"] == "play_by_play+player_game_log" and meta["rz_attempts_source"] == "play_by_play"
    assert meta["weeks_data"] >= 2 and meta["rz_attempts"] >= 5
    assert meta["efficiency_adjustment"] in (0.92, 1.0, 1.15)


def test_zero_percent_with_shadow_on_serves_only_v1(make_app: AppFactory) -> None:
    app = make_app(V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 0, "v2_shadow_mode_enabled": True})
    versions = {
        (a["calculator_version"], a["metadata"]["assigned_version"], a["metadata"]["data_source"])
        for a in (ask(app, f"user-{n}") for n in range(200))
    }
    assert versions == {("v1", "v1", "play_by_play")}


def test_v2_user_without_enough_data_is_served_v1_with_the_reason(make_app: AppFactory) -> None:
    app = make_app(V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 100})
    answer = ask(app, "user-1", {"player": "Taysom Hill", "opponent": "KC"})  # gadget snaps only
    assert answer["calculator_version"] == "v1"
    meta = answer["metadata"]
    assert meta["assigned_version"] == "v2"
    assert meta["fallback_to_v1"] is True
    assert meta["fallback_reason"].startswith("insufficient_red_zone_attempts: Taysom Hill")
    assert meta["data_source"] == "play_by_play"


def test_convert_records_a_conversion(app: Flask) -> None:
    response = app.test_client().post("/api/convert", headers={"X-User-Id": "user-5"})
    assert response.status_code == 204


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("user-42", "user-42"),
        ("  user-42 ", "user-42"),
        ("", None),
        ("   ", None),
        ("u" * MAX_USER_ID_LENGTH, "u" * MAX_USER_ID_LENGTH),
        ("u" * (MAX_USER_ID_LENGTH + 1), None),
    ],
)
def test_user_id_comes_from_the_gateway_header(app: Flask, header: str, expected: str | None) -> None:
    with app.test_request_context(headers={"X-User-Id": header}):
        assert user_from_gateway() == expected


def test_no_header_means_no_user_id(app: Flask) -> None:
    with app.test_request_context():
        assert user_from_gateway() is None
