"""POST /api/edges input handling, the landing page and the health check."""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from example_app.db import connect
from example_app.importer import COLUMNS, import_game_log
from example_app.nfl import MAX_PLAYER_NAME_LENGTH

AppFactory = Callable[..., Flask]
GOOD = {"player": "Patrick Mahomes", "opponent": "LAC"}


@pytest.mark.parametrize(
    ("kwargs", "code", "field"),
    [
        ({"data": "player=Patrick Mahomes"}, "invalid_json", None),
        ({"data": "{not json", "content_type": "application/json"}, "invalid_json", None),
        ({"json": ["Patrick Mahomes", "LAC"]}, "invalid_json", None),
        ({"json": {"opponent": "LAC"}}, "missing_field", "player"),
        ({"json": {"player": "Patrick Mahomes"}}, "missing_field", "opponent"),
        ({"json": {"player": "", "opponent": "LAC"}}, "empty_field", "player"),
        ({"json": {"player": "   ", "opponent": "LAC"}}, "empty_field", "player"),
        ({"json": {"player": 15, "opponent": "LAC"}}, "invalid_type", "player"),
        ({"json": {"player": "Patrick Mahomes", "opponent": None}}, "invalid_type", "opponent"),
        ({"json": {"player": "x" * (MAX_PLAYER_NAME_LENGTH + 1), "opponent": "LAC"}}, "too_long", "player"),
        ({"json": {"player": "Patrick Mahomes", "opponent": "Los Angeles Chargers"}}, "too_long", "opponent"),
        ({"json": {**GOOD, "odds": "-110"}}, "invalid_type", "odds"),
        ({"json": {**GOOD, "odds": True}}, "invalid_type", "odds"),
        ({"json": {**GOOD, "odds": -110.5}}, "invalid_type", "odds"),
        ({"json": {**GOOD, "odds": 50}}, "invalid_value", "odds"),
        ({"data": b'{"player": "\\ud800", "opponent": "LAC"}', "content_type": "application/json"},
         "invalid_text", "player"),
        ({"data": b'{"player": "Patrick Mahomes", "opponent": "L\\udfffC"}', "content_type": "application/json"},
         "invalid_text", "opponent"),
    ],
)
def test_bad_input_is_400_with_code_message_and_field(
    app: Flask, kwargs: dict[str, Any], code: str, field: str | None
) -> None:
    response = app.test_client().post("/api/edges", **kwargs)
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error["field"] == field
    assert error["message"]


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"player": "Nobody Special", "opponent": "LAC"}, "unknown_player", "player"),
        ({"player": "Patrick Mahomes", "opponent": "XYZ"}, "unknown_team", "opponent"),
    ],
)
def test_unknown_player_or_team_is_404(app: Flask, body: dict[str, str], code: str, field: str) -> None:
    response = app.test_client().post("/api/edges", json=body)
    assert response.status_code == 404
    error = response.get_json()["error"]
    assert (error["code"], error["field"]) == (code, field)
    assert repr(body[field]) in error["message"]


def test_player_who_did_not_play_this_season_is_404(app: Flask, generated_conn: sqlite3.Connection) -> None:
    [(name,)] = generated_conn.execute(
        "SELECT DISTINCT player_name FROM player_game_log WHERE season = 2024 AND player_name NOT IN"
        " (SELECT player_name FROM player_game_log WHERE season = 2025) ORDER BY player_name LIMIT 1"
    ).fetchall()
    response = app.test_client().post("/api/edges", json={"player": name, "opponent": "KC"})
    assert response.status_code == 404
    assert "played in 2025" in response.get_json()["error"]["message"]


def test_names_and_teams_are_normalized(app: Flask) -> None:
    response = app.test_client().post("/api/edges", json={"player": "  patrick   MAHOMES ", "opponent": " lac"})
    assert response.status_code == 200
    answer = response.get_json()
    assert (answer["player"], answer["opponent"]) == ("Patrick Mahomes", "LAC")


def test_odds_in_the_request_price_the_edge(app: Flask) -> None:
    client = app.test_client()
    plain = client.post("/api/edges", json=GOOD).get_json()
    priced = client.post("/api/edges", json={**GOOD, "odds": 150}).get_json()
    assert priced["metadata"]["market_odds"] == 150
    assert priced["metadata"]["market_probability"] == 0.4
    assert priced["metadata"]["td_probability"] == plain["metadata"]["td_probability"]
    assert priced["edge"] == pytest.approx((priced["metadata"]["td_probability"] - 0.4) * 100, abs=0.01)


def test_landing_page_links_the_api_and_the_admin(app: Flask) -> None:
    response = app.test_client().get("/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "/api/edges" in page and 'href="/v2rollout/"' in page


def test_healthz_is_ok_with_the_database(app: Flask) -> None:
    response = app.test_client().get("/healthz")
    assert (response.status_code, response.get_json()) == (200, {"status": "ok"})


def test_healthz_is_503_without_the_database(make_app: AppFactory, tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    app = make_app(NFL_DATABASE=str(missing))
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["status"] == "unavailable"
    assert not missing.exists()  # a probe must not create an empty database


@pytest.mark.parametrize("percentage", [0, 100])
def test_player_known_only_to_the_game_log_is_404(make_app: AppFactory, tmp_path: Path, percentage: int) -> None:
    app = make_app(V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": percentage})
    csv_file = tmp_path / "week8.csv"
    csv_file.write_text(f"{','.join(COLUMNS)}\nBrand New,KC,LV,30,20,200,2,0,6,1\n", encoding="utf-8")
    conn = connect(app.config["NFL_DATABASE"])
    import_game_log(conn, str(csv_file), 2025, 8)
    conn.close()
    response = app.test_client().post("/api/edges", json={"player": "Brand New", "opponent": "LV"},
                                      headers={"X-User-Id": "user-1"})
    assert response.status_code == 404
    error = response.get_json()["error"]
    assert (error["code"], error["field"]) == ("no_data", "player")
    assert "no play-by-play for Brand New in 2025" in error["message"]
