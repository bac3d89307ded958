"""The two QB touchdown edge calculators the rollout moves between.

Both turn an expected number of passing touchdowns into the probability of at
least one (Poisson), and report the edge over the market's implied probability
in percentage points. v1 counts touchdowns in ``play_by_play``, where some are
missing (``is_touchdown = 0``); v2 reads both sources, as the runbook has it: the
game log's box scores for touchdowns (which it records correctly) and
``play_by_play`` for red-zone pass attempts (one row per play, so the attempts are
right even where the touchdown flag is not), and adjusts for the quarterback's
red-zone efficiency over weeks 3–7 of the season.
"""
from __future__ import annotations

import abc
import math
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from flask_v2rollout import Fallback

#: The runbook's v2 tuning constants.
V2_CONFIG: dict[str, float] = {
    "high_efficiency_threshold": 0.15,
    "low_efficiency_threshold": 0.05,
    "high_efficiency_boost": 1.15,
    "low_efficiency_penalty": 0.92,
}
#: Weeks whose red-zone passing measures efficiency ("weeks 3–7 of the current season").
EFFICIENCY_WEEKS = (3, 7)
#: "Sufficient v2 data" per the runbook; below either, v2 hands the call to v1.
MIN_WEEKS = 2
MIN_RED_ZONE_ATTEMPTS = 5
#: How far a defense's touchdowns allowed move the expectation (0: ignore, 1: fully).
DEFENSE_WEIGHT = 0.5
#: Price of "over 0.5 passing touchdowns" when neither the request nor ``market_lines`` has one.
DEFAULT_MARKET_ODDS = -200

#: v2's per-call query; it must be answered through ``idx_game_log_composite``
#: (the runbook's slow-query check, ``probes.v2_query_uses_composite_index``).
EFFICIENCY_WINDOW_SQL = (
    "SELECT COALESCE(SUM(passing_touchdowns), 0), COALESCE(SUM(red_zone_passes), 0),"
    " COALESCE(SUM(red_zone_touchdowns), 0), COUNT(DISTINCT week) FROM player_game_log"
    " WHERE player_name = ? AND season = ? AND week BETWEEN ? AND ?"
)

#: v2's red-zone attempts, counted play by play (``idx_pbp_passer_red_zone``).
RED_ZONE_ATTEMPTS_SQL = (
    "SELECT COUNT(*), COUNT(DISTINCT week), COALESCE(SUM(yardline_100 <= 20), 0) FROM play_by_play"
    " WHERE passer_player_name = ? AND season = ? AND week BETWEEN ? AND ? AND play_type = 'pass'"
)

EdgeRequest = Mapping[str, Any]
Edge = dict[str, Any]


class NoData(LookupError):
    """The player has no games in the calculator's season, so there is nothing to price."""


def implied_probability(american_odds: int) -> float:
    """Probability implied by American odds (-200 → 0.667, +150 → 0.4)."""
    if american_odds < 0:
        return -american_odds / (-american_odds + 100.0)
    return 100.0 / (american_odds + 100.0)


def defense_adjustment(allowed: float, games: int, league_per_game: float) -> float:
    """Factor for the opponent: touchdowns it allows per game against the league's, damped."""
    if games == 0 or league_per_game <= 0:
        return 1.0
    return 1.0 + DEFENSE_WEIGHT * (allowed / games / league_per_game - 1.0)


class _Calculator(abc.ABC):
    """What both versions share: the batch interface and turning an expectation into an edge."""

    version = ""

    def __init__(self, conn: sqlite3.Connection, season: int) -> None:
        self.conn = conn
        self.season = season

    def calculate_edges(self, requests: Iterable[EdgeRequest]) -> dict[str, list[Edge]]:
        """The runbook's call: ``[{'player', 'opponent'[, 'odds']}]`` → ``{'edges': [...]}``."""
        return {"edges": [self.calculate_edge(r) for r in requests]}

    @abc.abstractmethod
    def calculate_edge(self, request: EdgeRequest) -> Edge:
        """One request's edge."""

    def market_odds(self, request: EdgeRequest) -> int:
        """The request's odds, else the book's line for the player, else the default."""
        if request.get("odds") is not None:
            return int(request["odds"])
        row = self.conn.execute(
            "SELECT odds FROM market_lines WHERE season = ? AND player_name = ?",
            (self.season, request["player"]),
        ).fetchone()
        return row[0] if row else DEFAULT_MARKET_ODDS

    def edge(self, expected_tds: float, request: EdgeRequest, metadata: dict[str, Any]) -> Edge:
        """Edge in percentage points of P(at least one TD) over the market's implied probability."""
        probability = 1.0 - math.exp(-expected_tds)
        odds = self.market_odds(request)
        market = implied_probability(odds)
        metadata.update(
            calculator_version=self.version,
            td_probability=round(probability, 4),
            market_odds=odds,
            market_probability=round(market, 4),
            fallback_to_v1=False,
            fallback_reason=None,
        )
        return {"edge": round((probability - market) * 100.0, 2), "metadata": metadata}


class EdgeCalculator(_Calculator):
    """v1: season touchdowns per game from ``play_by_play``, adjusted for the defense."""

    version = "v1"

    def calculate_edge(self, request: EdgeRequest) -> Edge:
        player, opponent = request["player"], request["opponent"]
        tds, games = self.conn.execute(
            "SELECT COALESCE(SUM(is_touchdown), 0), COUNT(DISTINCT week) FROM play_by_play"
            " WHERE passer_player_name = ? AND season = ?",
            (player, self.season),
        ).fetchone()
        if games == 0:
            raise NoData(f"no play-by-play for {player} in {self.season}")
        allowed, opp_games = self.conn.execute(
            "SELECT COALESCE(SUM(is_touchdown), 0), COUNT(DISTINCT week) FROM play_by_play"
            " WHERE defteam = ? AND season = ?",
            (opponent, self.season),
        ).fetchone()
        league_tds, league_games = self.conn.execute(
            "SELECT COALESCE(SUM(is_touchdown), 0), COUNT(DISTINCT game_id) FROM play_by_play"
            " WHERE season = ?",
            (self.season,),
        ).fetchone()
        defense = defense_adjustment(allowed, opp_games, league_tds / (2 * league_games))
        return self.edge(tds / games * defense, request, {
            "data_source": "play_by_play",
            "red_zone_td_rate": None,
            "weeks_data": games,
            "rz_attempts": None,
            "efficiency_adjustment": None,
            "defense_adjustment": round(defense, 4),
        })


class QBTDCalculatorV2(_Calculator):
    """v2: game-log touchdowns per game, red-zone efficiency (weeks 3–7) and defense.

    Two sources: touchdowns come from ``player_game_log``; the red-zone attempts
    the efficiency rate divides by come from ``play_by_play``. Where the play-by-play
    holds no pass of the quarterback in the window (a feed that lags the box
    scores), the game log's ``red_zone_passes`` stand in, and the metadata says so
    (``rz_attempts_source``).

    The efficiency boost or penalty scales the red-zone part of the expectation
    only: it measures how well a quarterback finishes drives, not how often he
    throws touchdowns from outside the 20.

    Raises :class:`Fallback` when the efficiency window holds too little data
    for the adjustment to mean anything; the rollout then serves v1.
    """

    version = "v2"

    def calculate_edge(self, request: EdgeRequest) -> Edge:
        player, opponent = request["player"], request["opponent"]
        first, last = EFFICIENCY_WEEKS
        window_tds, game_log_rz_attempts, rz_tds, weeks = self.conn.execute(
            EFFICIENCY_WINDOW_SQL, (player, self.season, first, last)
        ).fetchone()
        passes, _pbp_weeks, pbp_rz_attempts = self.conn.execute(
            RED_ZONE_ATTEMPTS_SQL, (player, self.season, first, last)
        ).fetchone()
        rz_attempts, attempts_source = (
            (pbp_rz_attempts, "play_by_play") if passes else (game_log_rz_attempts, "player_game_log"))
        if weeks < MIN_WEEKS:
            raise Fallback(
                f"insufficient_weeks: {player} has {weeks} week(s) in weeks {first}-{last}"
                f" of {self.season}, v2 needs {MIN_WEEKS}"
            )
        if rz_attempts < MIN_RED_ZONE_ATTEMPTS:
            raise Fallback(
                f"insufficient_red_zone_attempts: {player} has {rz_attempts} in weeks"
                f" {first}-{last} of {self.season}, v2 needs {MIN_RED_ZONE_ATTEMPTS}"
            )
        rate = min(1.0, rz_tds / rz_attempts)
        if rate > V2_CONFIG["high_efficiency_threshold"]:
            efficiency = V2_CONFIG["high_efficiency_boost"]
        elif rate < V2_CONFIG["low_efficiency_threshold"]:
            efficiency = V2_CONFIG["low_efficiency_penalty"]
        else:
            efficiency = 1.0
        tds, season_rz_tds, games = self.conn.execute(
            "SELECT SUM(passing_touchdowns), SUM(red_zone_touchdowns), COUNT(DISTINCT week)"
            " FROM player_game_log WHERE player_name = ? AND season = ?",
            (player, self.season),
        ).fetchone()
        allowed, opp_games = self.conn.execute(
            "SELECT COALESCE(SUM(passing_touchdowns), 0), COUNT(DISTINCT week) FROM player_game_log"
            " WHERE season = ? AND opponent = ?",
            (self.season, opponent),
        ).fetchone()
        league_tds, team_games = self.conn.execute(
            "SELECT SUM(passing_touchdowns), (SELECT COUNT(*) FROM"
            " (SELECT DISTINCT opponent, week FROM player_game_log WHERE season = ?1))"
            " FROM player_game_log WHERE season = ?1",
            (self.season,),
        ).fetchone()
        defense = defense_adjustment(allowed, opp_games, league_tds / team_games)
        expected = (tds - season_rz_tds + season_rz_tds * efficiency) / games * defense
        return self.edge(expected, request, {
            "data_source": "play_by_play+player_game_log",
            "red_zone_td_rate": round(rate, 4),
            "weeks_data": weeks,
            "rz_attempts": rz_attempts,
            "rz_attempts_source": attempts_source,
            "window_passing_tds": window_tds,
            "efficiency_adjustment": efficiency,
            "defense_adjustment": round(defense, 4),
        })
