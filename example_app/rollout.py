"""The ``qb_td`` rollout: how this app hands its two calculators to Flask-V2Rollout.

Registered once at import, like any Flask extension object; every app made by
``create_app`` serves it through ``rollout.init_app(app)``.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from flask import current_app, request

from flask_v2rollout import V2Rollout

from . import probes, quality
from .calculators import Edge, EdgeCalculator, EdgeRequest, QBTDCalculatorV2
from .db import database_path, get_db

ROLLOUT = "qb_td"
#: Longest user id accepted from the gateway header.
MAX_USER_ID_LENGTH = 128

rollout = V2Rollout()


@rollout.user_loader
def user_from_gateway() -> str | None:
    """The caller's id from ``X-User-Id``.

    This demo service sits behind an authentication gateway that sets the header
    after authenticating the caller; a service reachable directly must not trust
    it. Without it the extension keeps a sticky anonymous id in the session.
    """
    uid = request.headers.get("X-User-Id", "").strip()
    return uid if 0 < len(uid) <= MAX_USER_ID_LENGTH else None


def current_season() -> int:
    return int(current_app.config["NFL_SEASON"])


def edge_v1(req: EdgeRequest) -> Edge:
    """v1 for one request (``calculate_edges`` is the calculators' batch interface)."""
    return EdgeCalculator(get_db(), current_season()).calculate_edges([req])["edges"][0]


class InjectedFault(RuntimeError):
    """Raised by v2 when ``V2_FAULT_RATE`` asks for it: rehearse rollback and fallback (runbook checklist)."""


_v2_calls = itertools.count()

#: the fields of an edge request a replay needs; anything else a client sends is not stored
RECORDED_FIELDS = ("player", "opponent", "odds")


def redact_edge_request(inputs: dict[str, Any]) -> dict[str, Any]:
    """What is recorded of a call: the request's football fields only (no user data travels in it)."""
    args = [{k: req[k] for k in RECORDED_FIELDS if k in req} for req in inputs["args"]]
    return {"args": args, "kwargs": {}}


def edge_v2(req: EdgeRequest) -> Edge:
    """v2 for one request; its ``Fallback`` makes the extension serve v1."""
    rate = float(current_app.config.get("V2_FAULT_RATE", 0.0))
    if rate:
        n = next(_v2_calls)  # spread evenly: after any n calls, round(n × rate) have failed, give or take one
        if int((n + 1) * rate) > int(n * rate):
            raise InjectedFault(f"injected v2 fault (V2_FAULT_RATE={rate:g})")
    return QBTDCalculatorV2(get_db(), current_season()).calculate_edges([req])["edges"][0]


rollout.register(
    ROLLOUT,
    v1=edge_v1,
    v2=edge_v2,
    # The runbook buckets by md5(user_id) % 100: no salt, so users keep the version the hand-run rollout gave them.
    salt="",
    subject=lambda req: req["player"],
    extract="edge",
    metadata=lambda edge: edge["metadata"],
    # the runbook's own field names, so its jq recipes read this app's log as they are
    log_fields={"subject": "player_name", "value": "edge"},
    # keep each request's inputs (bounded, in SQL) for `flask v2rollout replay` after a fix
    record_inputs=True,
    redact_inputs=redact_edge_request,
)


def _with_app_config(func: Callable[..., Any], *, season: bool) -> Callable[[], Any]:
    """A zero-argument probe/check reading the current app's database (and season)."""
    def run() -> Any:
        return func(database_path(), current_season()) if season else func(database_path())
    run.__name__ = func.__name__
    run.__doc__ = func.__doc__
    return run


rollout.probe("qbs_with_v2_data_pct")(_with_app_config(probes.qbs_with_v2_data_pct, season=True))
rollout.probe("weeks_of_data_available")(_with_app_config(probes.weeks_of_data_available, season=True))
rollout.probe("weeks_of_data_behind")(_with_app_config(probes.weeks_of_data_behind, season=True))
rollout.probe("qbs_falling_back_to_v1_pct")(_with_app_config(probes.qbs_falling_back_to_v1_pct, season=True))
rollout.probe("last_game_log_import_hours_ago")(_with_app_config(probes.last_game_log_import_hours_ago, season=False))
rollout.verify_check("indexes_present")(_with_app_config(probes.indexes_present, season=False))
rollout.verify_check("integrity_check")(_with_app_config(probes.integrity_check, season=False))
rollout.verify_check("v2_query_uses_composite_index")(
    _with_app_config(probes.v2_query_uses_composite_index, season=False)
)


def _qbs_per_week() -> tuple[bool, str]:
    """50–70 quarterbacks in every week of the season (``NFL_QBS_PER_WEEK``)."""
    return quality.qbs_per_week(database_path(), current_season(), current_app.config["NFL_QBS_PER_WEEK"])


rollout.verify_check("game_log_import_fresh")(_with_app_config(quality.import_fresh, season=False))
rollout.verify_check("qbs_per_week")(_qbs_per_week)
rollout.verify_check("weeks_pass_data_quality")(_with_app_config(quality.weeks_pass_validator, season=False))
rollout.verify_check("vacuum_analyze_done")(_with_app_config(quality.maintenance_done, season=False))
rollout.verify_check("database_file_mode_644")(_with_app_config(quality.file_mode, season=False))
