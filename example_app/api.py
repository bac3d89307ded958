"""JSON API: price a QB touchdown edge through the rollout, record conversions.

Errors always have the shape ``{"error": {"code", "message", "field"}}`` so
clients (and the traffic simulator) can tell bad input (400) from unknown
players or teams (404).
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .calculators import NoData
from .db import get_db
from .nfl import MAX_PLAYER_NAME_LENGTH, TEAMS, normalize_player_name, normalize_team
from .players import find_player
from .rollout import ROLLOUT, rollout

bp = Blueprint("api", __name__, url_prefix="/api")

#: American odds accepted for the market line (|odds| >= 100 by definition).
MAX_ODDS = 100_000


class ApiError(Exception):
    """An error answered to the client as JSON."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


@bp.errorhandler(ApiError)
def _api_error(err: ApiError) -> tuple[Response, int]:
    return jsonify(error={"code": err.code, "message": err.message, "field": err.field}), err.status


def _json_object() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "invalid_json", "send a JSON object with Content-Type: application/json")
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", f"expected a JSON object, got {type(body).__name__}")
    return body


def _text(body: dict[str, Any], field: str, max_length: int) -> str:
    if field not in body:
        raise ApiError(400, "missing_field", f"{field!r} is required", field)
    value = body[field]
    if not isinstance(value, str):
        raise ApiError(400, "invalid_type", f"{field!r} must be a string", field)
    if not value.strip():
        raise ApiError(400, "empty_field", f"{field!r} must not be empty", field)
    if len(value) > max_length:
        raise ApiError(400, "too_long", f"{field!r} must be at most {max_length} characters", field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate such as JSON "\ud800": SQLite and the logs could not store it
        raise ApiError(400, "invalid_text", f"{field!r} contains characters that are not valid Unicode text",
                       field) from None
    return value


def _odds(body: dict[str, Any]) -> int | None:
    value = body.get("odds")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "invalid_type", "'odds' must be an integer (American odds)", "odds")
    if not 100 <= abs(value) <= MAX_ODDS:
        raise ApiError(400, "invalid_value", f"'odds' must be between 100 and {MAX_ODDS} in magnitude", "odds")
    return value


@bp.post("/edges")
def edges() -> Response:
    """``{"player", "opponent"[, "odds"]}`` → the edge served to this user, with metadata."""
    body = _json_object()
    raw_player = _text(body, "player", MAX_PLAYER_NAME_LENGTH)
    raw_team = _text(body, "opponent", max(map(len, TEAMS)) + 2)
    odds = _odds(body)
    opponent = normalize_team(raw_team)
    if opponent not in TEAMS:
        raise ApiError(404, "unknown_team", f"no team {raw_team!r}; use an abbreviation such as KC", "opponent")
    season = int(current_app.config["NFL_SEASON"])
    player = find_player(get_db(), normalize_player_name(raw_player), season)
    if player is None:
        raise ApiError(404, "unknown_player", f"no quarterback {raw_player!r} played in {season}", "player")
    req: dict[str, Any] = {"player": player, "opponent": opponent}
    if odds is not None:
        req["odds"] = odds
    try:
        outcome = rollout.calculate(ROLLOUT, req)
    except NoData as exc:
        raise ApiError(404, "no_data", str(exc), "player") from None
    metadata = {
        **outcome.value["metadata"],
        "calculator_version": outcome.version,
        "assigned_version": outcome.assigned,
        "fallback_to_v1": outcome.assigned == "v2" and outcome.version == "v1",
        "fallback_reason": outcome.fallback_reason,
    }
    return jsonify(
        player=player,
        opponent=opponent,
        edge=outcome.value["edge"],
        calculator_version=outcome.version,
        metadata=metadata,
    )


@bp.post("/convert")
def convert() -> tuple[str, int]:
    """The user acted on an edge (placed the bet): a conversion for their version."""
    rollout.track_conversion(ROLLOUT)
    return "", 204
