"""v1 and v2 on hand-made data, with every edge worked out by hand."""
from __future__ import annotations

import math
import shutil
import sqlite3
from pathlib import Path

import pytest

from example_app.calculators import (
    EFFICIENCY_WINDOW_SQL,
    EdgeCalculator,
    NoData,
    QBTDCalculatorV2,
    implied_probability,
)
from example_app.probes import v2_query_uses_composite_index
from flask_v2rollout import Fallback

SEASON = 2025
QB = "Test Passer"


def add_play(conn: sqlite3.Connection, week: int, team: str, defense: str, passer: str,
             touchdown: bool = False, recorded: bool = True) -> None:
    """One pass play; a touchdown with ``recorded=False`` reproduces the v1 bug."""
    yardline = 10 if touchdown else 40
    conn.execute(
        "INSERT INTO play_by_play (game_id, season, week, posteam, defteam, passer_player_name,"
        " play_type, yardline_100, complete_pass, yards_gained, interception, is_touchdown)"
        " VALUES (?, ?, ?, ?, ?, ?, 'pass', ?, ?, ?, 0, ?)",
        (f"{SEASON}_{week:02d}", SEASON, week, team, defense, passer, yardline,
         int(touchdown), yardline if touchdown else 0, int(touchdown and recorded)),
    )


def add_game(conn: sqlite3.Connection, week: int, opponent: str, tds: int, rz_passes: int,
             rz_tds: int, player: str = QB) -> None:
    conn.execute(
        "INSERT INTO player_game_log (player_name, team, opponent, season, week, pass_attempts,"
        " completions, passing_yards, passing_touchdowns, interceptions, red_zone_passes,"
        " red_zone_touchdowns) VALUES (?, 'KC', ?, ?, ?, 30, 20, 250, ?, 0, ?, ?)",
        (player, opponent, SEASON, week, tds, rz_passes, rz_tds),
    )


def test_implied_probability_of_american_odds() -> None:
    assert implied_probability(-200) == pytest.approx(2 / 3)
    assert implied_probability(150) == pytest.approx(0.4)
    assert implied_probability(100) == pytest.approx(0.5)


def test_v1_edge_from_play_by_play_by_hand(hand_db: sqlite3.Connection) -> None:
    # Week 1 (game 1): QB vs LAC throws 2 TDs; LAC's passer throws 1 against KC.
    add_play(hand_db, 1, "KC", "LAC", QB, touchdown=True)
    add_play(hand_db, 1, "KC", "LAC", QB, touchdown=True)
    add_play(hand_db, 1, "KC", "LAC", QB)
    add_play(hand_db, 1, "LAC", "KC", "Other Passer", touchdown=True)
    # Week 2 (game 2): QB vs DEN throws 2 TDs, one recorded as is_touchdown = 0.
    add_play(hand_db, 2, "KC", "DEN", QB, touchdown=True)
    add_play(hand_db, 2, "KC", "DEN", QB, touchdown=True, recorded=False)
    add_play(hand_db, 2, "DEN", "KC", "Third Passer")
    hand_db.commit()

    result = EdgeCalculator(hand_db, SEASON).calculate_edges(
        [{"player": QB, "opponent": "LAC", "odds": -200}]
    )

    # v1 sees 3 TDs in 2 games = 1.5 per game. League: 4 recorded TDs over
    # 2 games = 4 team-games → 1.0; LAC allowed 2 in 1 game → factor 1 + 0.5 × (2 − 1) = 1.5.
    expected = round((1 - math.exp(-1.5 * 1.5) - 2 / 3) * 100, 2)
    [edge] = result["edges"]
    assert edge["edge"] == expected == 22.79
    meta = edge["metadata"]
    assert meta["calculator_version"] == "v1"
    assert meta["data_source"] == "play_by_play"
    assert meta["defense_adjustment"] == 1.5
    assert meta["weeks_data"] == 2
    assert meta["fallback_to_v1"] is False and meta["fallback_reason"] is None


def test_v1_without_games_in_the_season_has_no_data(hand_db: sqlite3.Connection) -> None:
    with pytest.raises(NoData, match="no play-by-play for Nobody in 2025"):
        EdgeCalculator(hand_db, SEASON).calculate_edge({"player": "Nobody", "opponent": "KC"})


def season_of_five_weeks(conn: sqlite3.Connection, window_rz_tds: int) -> None:
    """Weeks 1–5; the window (weeks 3–5 here) has 10 red-zone passes, ``window_rz_tds`` scored."""
    add_game(conn, 1, "NYJ", tds=1, rz_passes=2, rz_tds=0)
    add_game(conn, 2, "MIA", tds=0, rz_passes=1, rz_tds=0)
    add_game(conn, 3, "NYJ", tds=2, rz_passes=4, rz_tds=min(window_rz_tds, 2))
    add_game(conn, 4, "BUF", tds=1, rz_passes=3, rz_tds=max(0, window_rz_tds - 2))
    add_game(conn, 5, "NE", tds=2, rz_passes=3, rz_tds=0)
    conn.execute("INSERT INTO market_lines VALUES (?, ?, -150)", (SEASON, QB))
    conn.commit()


@pytest.mark.parametrize(
    ("window_rz_tds", "rate", "efficiency"),
    [
        (2, 0.2, 1.15),  # 2 / 10 > 0.15: boost
        (1, 0.1, 1.0),  # between the thresholds
        (0, 0.0, 0.92),  # 0 / 10 < 0.05: penalty
    ],
)
def test_v2_edge_from_game_log_by_hand(
    hand_db: sqlite3.Connection, window_rz_tds: int, rate: float, efficiency: float
) -> None:
    season_of_five_weeks(hand_db, window_rz_tds)

    [edge] = QBTDCalculatorV2(hand_db, SEASON).calculate_edges([{"player": QB, "opponent": "NYJ"}])["edges"]

    # Season: 6 TDs in 5 games, `window_rz_tds` of them in the red zone (scaled by efficiency).
    # NYJ allowed 1 + 2 = 3 TDs in 2 games = 1.5; league 6 TDs / 5 team-games = 1.2
    # → factor 1 + 0.5 × (1.5 / 1.2 − 1) = 1.125. Market -150 → 0.6.
    expected_tds = (6 - window_rz_tds + window_rz_tds * efficiency) / 5 * 1.125
    assert edge["edge"] == round((1 - math.exp(-expected_tds) - 0.6) * 100, 2)
    meta = edge["metadata"]
    assert meta["calculator_version"] == "v2"
    assert meta["data_source"] == "play_by_play+player_game_log"
    assert meta["red_zone_td_rate"] == rate
    assert meta["weeks_data"] == 3
    assert (meta["rz_attempts"], meta["rz_attempts_source"]) == (10, "player_game_log")  # no plays: the box score
    assert meta["efficiency_adjustment"] == efficiency
    assert meta["defense_adjustment"] == 1.125
    assert meta["market_odds"] == -150
    assert meta["fallback_to_v1"] is False and meta["fallback_reason"] is None


def test_v2_boost_worked_example(hand_db: sqlite3.Connection) -> None:
    season_of_five_weeks(hand_db, 2)
    edge = QBTDCalculatorV2(hand_db, SEASON).calculate_edge({"player": QB, "opponent": "NYJ"})
    # (4 + 2 × 1.15) / 5 × 1.125 = 1.4175 → 1 − e^−1.4175 = 0.7577 → 0.7577 − 0.6 = 15.77 points
    assert edge["edge"] == 15.77


def test_v2_rate_exactly_at_the_high_threshold_is_not_boosted(hand_db: sqlite3.Connection) -> None:
    add_game(hand_db, 3, "NYJ", tds=2, rz_passes=10, rz_tds=1)
    add_game(hand_db, 4, "BUF", tds=1, rz_passes=10, rz_tds=2)
    hand_db.commit()
    meta = QBTDCalculatorV2(hand_db, SEASON).calculate_edge({"player": QB, "opponent": "NYJ"})["metadata"]
    assert meta["red_zone_td_rate"] == 0.15
    assert meta["efficiency_adjustment"] == 1.0


def test_v2_falls_back_with_fewer_than_two_weeks(hand_db: sqlite3.Connection) -> None:
    add_game(hand_db, 1, "NYJ", tds=3, rz_passes=9, rz_tds=2)  # outside the window
    add_game(hand_db, 4, "BUF", tds=2, rz_passes=9, rz_tds=2)
    hand_db.commit()
    with pytest.raises(Fallback) as info:
        QBTDCalculatorV2(hand_db, SEASON).calculate_edges([{"player": QB, "opponent": "BUF"}])
    assert info.value.reason.startswith("insufficient_weeks: ")
    assert "1 week(s)" in info.value.reason


def test_v2_falls_back_with_fewer_than_five_red_zone_attempts(hand_db: sqlite3.Connection) -> None:
    add_game(hand_db, 3, "NYJ", tds=1, rz_passes=2, rz_tds=1)
    add_game(hand_db, 4, "BUF", tds=1, rz_passes=2, rz_tds=0)
    hand_db.commit()
    with pytest.raises(Fallback) as info:
        QBTDCalculatorV2(hand_db, SEASON).calculate_edge({"player": QB, "opponent": "BUF"})
    assert info.value.reason.startswith("insufficient_red_zone_attempts: ")
    assert "has 4 " in info.value.reason


def test_v2_five_red_zone_attempts_over_two_weeks_are_enough(hand_db: sqlite3.Connection) -> None:
    add_game(hand_db, 3, "NYJ", tds=1, rz_passes=3, rz_tds=0)
    add_game(hand_db, 7, "BUF", tds=1, rz_passes=2, rz_tds=0)
    hand_db.commit()
    meta = QBTDCalculatorV2(hand_db, SEASON).calculate_edge({"player": QB, "opponent": "BUF"})["metadata"]
    assert (meta["weeks_data"], meta["rz_attempts"]) == (2, 5)


def test_v2_window_query_searches_the_composite_index(generated_conn: sqlite3.Connection) -> None:
    plan = " | ".join(
        row[3] for row in generated_conn.execute(
            "EXPLAIN QUERY PLAN " + EFFICIENCY_WINDOW_SQL, ("Patrick Mahomes", 2025, 3, 7)
        )
    )
    assert "SEARCH player_game_log USING INDEX idx_game_log_composite" in plan or \
        "SEARCH player_game_log USING COVERING INDEX idx_game_log_composite" in plan, plan


def test_composite_index_check_fails_without_the_index(generated_db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.db"
    shutil.copyfile(generated_db, copy)
    assert v2_query_uses_composite_index(str(copy))[0] is True
    conn = sqlite3.connect(copy)
    conn.execute("DROP INDEX idx_game_log_composite")
    conn.commit()
    conn.close()
    ok, detail = v2_query_uses_composite_index(str(copy))
    assert ok is False
    assert "idx_game_log_composite" not in detail


def test_v2_counts_red_zone_attempts_play_by_play_and_touchdowns_from_the_game_log(
    hand_db: sqlite3.Connection,
) -> None:
    season_of_five_weeks(hand_db, 2)  # the game log says 10 red-zone passes, 2 red-zone TDs, in weeks 3–7
    # the play-by-play holds 8 red-zone passes in the window (plus 3 from the 30), none flagged as a touchdown
    plays = [(3, 15), (3, 8), (3, 30), (4, 12), (4, 5), (4, 30), (4, 30), (5, 19), (5, 2), (5, 20), (5, 11)]
    hand_db.executemany(
        "INSERT INTO play_by_play (game_id, season, week, posteam, defteam, passer_player_name, play_type,"
        " yardline_100, complete_pass, yards_gained, interception, is_touchdown)"
        " VALUES (?, ?, ?, 'KC', 'NYJ', ?, 'pass', ?, 1, 5, 0, 0)",
        [(f"g{week}", SEASON, week, QB, yardline) for week, yardline in plays],
    )
    [edge] = QBTDCalculatorV2(hand_db, SEASON).calculate_edges([{"player": QB, "opponent": "NYJ"}])["edges"]
    meta = edge["metadata"]
    assert (meta["rz_attempts"], meta["rz_attempts_source"]) == (8, "play_by_play")
    assert meta["red_zone_td_rate"] == 0.25  # the game log's 2 touchdowns over the play-by-play's 8 attempts
