"""Deterministic football data: the 2024 season and 2025 through week 7.

Everything comes from seeded ``random.Random`` streams, so every build of the
database holds the same rows (only the recorded import time differs) and the
figures in tests, validation and benchmarks are reproducible. Plays are
generated first and the game log is their box score, so the two sources agree
except for the v1 bug reproduced on purpose: a few touchdown plays are recorded
with ``is_touchdown = 0`` in ``play_by_play``.

The 2024 data is calibrated so that v1 and v2 agree on about 88 % of QB-weeks
(the runbook measured 90 %), and 2025 so that about 15 % of its quarterbacks
lack v2 data in weeks 3–7 (starters hurt early, backups with a few
relief snaps, a gadget-package passer).
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from .db import connect, create_schema
from .nfl import TEAMS

SEED = 2024_09_05  # 2024 kickoff
#: Weeks generated per season: a full 2024 regular season, 2025 up to the current week.
SEASON_WEEKS: dict[int, int] = {2024: 18, 2025: 7}
#: Share of touchdown plays that the play-by-play feed records as ``is_touchdown = 0``.
TOUCHDOWN_BUG_RATE = 0.02
#: The season the app prices (its weeks 3–7 are v2's efficiency window).
CURRENT_SEASON = 2025
#: Chance that a backup comes in for part of a game the starter started.
RELIEF_RATE = 0.03
#: A gadget-package quarterback: a pass or two most weeks, never enough for v2.
GADGET_QB = ("NO", "Taysom Hill")
#: Chance that the gadget quarterback throws in a game of his team.
GADGET_RATE = 0.7
#: Fewest passes a starter throws, whoever else came in.
MIN_STARTER_ATTEMPTS = 8
#: Bookmaker margin built into every market line, and how far its estimate strays.
MARKET_VIG = 0.03
MARKET_NOISE = 0.04
#: Weeks with byes (four teams each) in a full season.
BYE_WEEKS = range(5, 13)


@dataclass(frozen=True)
class Quarterback:
    """How a quarterback plays: volume and touchdown rates per pass attempt."""

    name: str
    team: str
    role: str  # "starter", "backup" or "gadget"
    attempts: float  # mean attempts in a start
    red_zone_share: float  # share of attempts thrown inside the opponent's 20
    red_zone_td_rate: float  # touchdowns per red-zone attempt
    long_td_rate: float  # touchdowns per attempt outside the red zone


# (team, starter, tier, backup): tier sets the red-zone efficiency of the starter.
_DEPTH_CHARTS: tuple[tuple[str, str, str, str], ...] = (
    ("ARI", "Kyler Murray", "good", "Clayton Tune"),
    ("ATL", "Kirk Cousins", "average", "Michael Penix Jr."),
    ("BAL", "Lamar Jackson", "elite", "Josh Johnson"),
    ("BUF", "Josh Allen", "elite", "Mitchell Trubisky"),
    ("CAR", "Bryce Young", "poor", "Andy Dalton"),
    ("CHI", "Caleb Williams", "average", "Tyson Bagent"),
    ("CIN", "Joe Burrow", "elite", "Jake Browning"),
    ("CLE", "Deshaun Watson", "poor", "Jameis Winston"),
    ("DAL", "Dak Prescott", "good", "Cooper Rush"),
    ("DEN", "Bo Nix", "average", "Jarrett Stidham"),
    ("DET", "Jared Goff", "elite", "Hendon Hooker"),
    ("GB", "Jordan Love", "good", "Malik Willis"),
    ("HOU", "C.J. Stroud", "good", "Davis Mills"),
    ("IND", "Anthony Richardson", "poor", "Joe Flacco"),
    ("JAX", "Trevor Lawrence", "average", "Mac Jones"),
    ("KC", "Patrick Mahomes", "elite", "Carson Wentz"),
    ("LAC", "Justin Herbert", "good", "Taylor Heinicke"),
    ("LAR", "Matthew Stafford", "good", "Jimmy Garoppolo"),
    ("LV", "Gardner Minshew", "poor", "Aidan O'Connell"),
    ("MIA", "Tua Tagovailoa", "good", "Tyler Huntley"),
    ("MIN", "Sam Darnold", "good", "Nick Mullens"),
    ("NE", "Drake Maye", "average", "Jacoby Brissett"),
    ("NO", "Derek Carr", "average", "Spencer Rattler"),
    ("NYG", "Daniel Jones", "poor", "Tommy DeVito"),
    ("NYJ", "Aaron Rodgers", "average", "Tyrod Taylor"),
    ("PHI", "Jalen Hurts", "good", "Kenny Pickett"),
    ("PIT", "Russell Wilson", "average", "Justin Fields"),
    ("SEA", "Geno Smith", "average", "Sam Howell"),
    ("SF", "Brock Purdy", "good", "Brandon Allen"),
    ("TB", "Baker Mayfield", "good", "Kyle Trask"),
    ("TEN", "Will Levis", "poor", "Mason Rudolph"),
    ("WAS", "Jayden Daniels", "good", "Marcus Mariota"),
)

# tier -> (touchdowns per red-zone attempt, per other attempt, mean attempts in a start)
_TIERS: dict[str, tuple[float, float, float]] = {
    "elite": (0.20, 0.026, 35.0),
    "good": (0.09, 0.022, 34.0),
    "average": (0.085, 0.019, 33.0),
    "poor": (0.075, 0.015, 31.0),
    "backup": (0.08, 0.016, 29.0),
    "gadget": (0.08, 0.016, 2.0),
}


def quarterbacks(rng: random.Random) -> list[Quarterback]:
    """Starters and backups of the 32 teams with their individual rates."""
    charts: list[tuple[str, tuple[tuple[str, str, str], ...]]] = [
        (t, ((s, tier, "starter"), (b, "backup", "backup"))) for t, s, tier, b in _DEPTH_CHARTS
    ]
    charts.append((GADGET_QB[0], ((GADGET_QB[1], "gadget", "gadget"),)))
    out: list[Quarterback] = []
    for team, players in charts:
        for name, level, role in players:
            rz_rate, long_rate, attempts = _TIERS[level]
            out.append(Quarterback(
                name=name, team=team, role=role,
                attempts=attempts + rng.uniform(-3.0, 3.0),
                red_zone_share=rng.uniform(0.15, 0.19),
                red_zone_td_rate=rz_rate * rng.uniform(0.92, 1.08),
                long_td_rate=long_rate * rng.uniform(0.9, 1.1),
            ))
    return out


def schedule(rng: random.Random, weeks: int) -> dict[int, list[tuple[str, str]]]:
    """Week -> (home, away) games; four teams have a bye in each of weeks 5–12."""
    byes = list(TEAMS)
    rng.shuffle(byes)
    bye_week = {team: BYE_WEEKS[i // 4] for i, team in enumerate(byes)}
    games: dict[int, list[tuple[str, str]]] = {}
    for week in range(1, weeks + 1):
        playing = [t for t in TEAMS if bye_week[t] != week]
        rng.shuffle(playing)
        games[week] = [(playing[i], playing[i + 1]) for i in range(0, len(playing), 2)]
    return games


class Play(NamedTuple):
    """A ``play_by_play`` row (without ``play_id``) plus what really happened."""

    game_id: str
    season: int
    week: int
    posteam: str
    defteam: str
    passer_player_name: str
    play_type: str
    yardline_100: int
    complete_pass: int
    yards_gained: int
    interception: int
    is_touchdown: int  # as recorded: the v1 bug lives here
    true_touchdown: int

    def row(self) -> tuple[object, ...]:
        """The columns ``play_by_play`` stores."""
        return self[:-1]


@dataclass(frozen=True)
class Appearance:
    """One quarterback's passing in one game."""

    qb: Quarterback
    season: int
    week: int
    game_id: str
    opponent: str
    attempts: int


def _weeks_out(rng: random.Random, season: int, weeks: int) -> dict[str, set[int]]:
    """Weeks each starter misses. A full season gets random injuries; the current one
    is scripted so that a plausible few quarterbacks lack v2 data in weeks 3–7."""
    if season != CURRENT_SEASON:
        out: dict[str, set[int]] = {}
        for team in [t for t in TEAMS if rng.random() < 0.35]:
            start = rng.randint(1, weeks)
            out[team] = set(range(start, min(weeks, start + rng.randint(0, 4)) + 1))
        return out
    lost, back_late, mid = rng.sample(TEAMS, 3)
    return {
        lost: set(range(3, weeks + 1)),  # starter lost for the season in week 3
        back_late: set(range(2, 7)),  # starter back for week 7 only
        mid: set(range(5, weeks + 1)),  # backup takes over mid-window
    }


def appearances(rng: random.Random, season: int, weeks: int, qbs: list[Quarterback]) -> list[Appearance]:
    """Who threw how many passes in every game: the starter, or the backup when he is out,
    plus occasional relief and gadget-package appearances."""
    by_team: dict[str, dict[str, Quarterback]] = {}
    for qb in qbs:
        by_team.setdefault(qb.team, {})[qb.role] = qb
    out_weeks = _weeks_out(rng, season, weeks)
    result: list[Appearance] = []
    for week, games in schedule(rng, weeks).items():
        for home, away in games:
            game_id = f"{season}_{week:02d}_{away}_{home}"
            for team, opponent in ((home, away), (away, home)):
                depth = by_team[team]
                starter, backup = depth["starter"], depth["backup"]
                qb = backup if week in out_weeks.get(team, ()) else starter
                attempts = max(12, round(rng.gauss(qb.attempts, 6.0)))
                if qb is starter and rng.random() < RELIEF_RATE:
                    relief = rng.randint(3, 12)
                    result.append(Appearance(backup, season, week, game_id, opponent, relief))
                    attempts = max(MIN_STARTER_ATTEMPTS, attempts - relief)
                if "gadget" in depth and rng.random() < GADGET_RATE:
                    gadget = rng.randint(1, 3)
                    result.append(Appearance(depth["gadget"], season, week, game_id, opponent, gadget))
                    attempts = max(MIN_STARTER_ATTEMPTS, attempts - gadget)
                result.append(Appearance(qb, season, week, game_id, opponent, attempts))
    return result


def plays(rng: random.Random, app: Appearance) -> list[Play]:
    """Pass plays of one appearance."""
    qb = app.qb
    rows: list[Play] = []
    for _ in range(app.attempts):
        red_zone = rng.random() < qb.red_zone_share
        yardline = rng.randint(1, 20) if red_zone else rng.randint(21, 85)
        touchdown = rng.random() < (qb.red_zone_td_rate if red_zone else qb.long_td_rate)
        interception = not touchdown and rng.random() < 0.022
        complete = touchdown or (not interception and rng.random() < 0.62)
        if touchdown:
            yards = yardline
        elif complete:
            yards = min(yardline - 1, max(-3, round(rng.gauss(9.0, 7.0))))
        else:
            yards = 0
        recorded_td = touchdown and rng.random() >= TOUCHDOWN_BUG_RATE
        rows.append(Play(
            app.game_id, app.season, app.week, qb.team, app.opponent, qb.name, "pass",
            yardline, int(complete), yards, int(interception), int(recorded_td), int(touchdown),
        ))
    return rows


def game_log_row(app: Appearance, rows: list[Play]) -> tuple[object, ...]:
    """The box score of one appearance, from its true (not as recorded) plays."""
    red_zone = [p for p in rows if p.yardline_100 <= 20]
    return (
        app.qb.name, app.qb.team, app.opponent, app.season, app.week,
        len(rows),
        sum(p.complete_pass for p in rows),
        sum(p.yards_gained for p in rows if p.complete_pass),
        sum(p.true_touchdown for p in rows),
        sum(p.interception for p in rows),
        len(red_zone),
        sum(p.true_touchdown for p in red_zone),
    )


def american_odds(probability: float) -> int:
    """American odds for a probability, rounded to 5 like a sportsbook's board."""
    if probability >= 0.5:
        raw = -100.0 * probability / (1.0 - probability)
    else:
        raw = 100.0 * (1.0 - probability) / probability
    return int(5 * round(raw / 5))


def market_line(rng: random.Random, qb: Quarterback) -> int:
    """The book's price of "over 0.5 passing TDs": its own estimate of the QB, plus margin."""
    expected = qb.attempts * (
        qb.red_zone_share * qb.red_zone_td_rate + (1 - qb.red_zone_share) * qb.long_td_rate
    )
    estimate = (1.0 - math.exp(-expected)) + rng.uniform(-MARKET_NOISE, MARKET_NOISE)
    return american_odds(min(0.95, max(0.05, estimate + MARKET_VIG)))


@dataclass(frozen=True)
class Summary:
    """What a build produced, for the CLI to report."""

    plays: int
    game_log_rows: int
    quarterbacks: int


def generate(conn: sqlite3.Connection, seed: int = SEED, now: datetime | None = None) -> Summary:
    """Fill an empty schema with every generated season, in one transaction."""
    rng = random.Random(seed)
    market_rng = random.Random(f"market-{seed}")  # its own stream: lines never shift the games
    qbs = quarterbacks(rng)
    imported_at = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    n_plays = n_logs = 0
    players: set[str] = set()
    with conn:
        for season, weeks in SEASON_WEEKS.items():
            for app in appearances(rng, season, weeks, qbs):
                rows = plays(rng, app)
                conn.executemany(
                    "INSERT INTO play_by_play (game_id, season, week, posteam, defteam,"
                    " passer_player_name, play_type, yardline_100, complete_pass, yards_gained,"
                    " interception, is_touchdown) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [p.row() for p in rows],
                )
                conn.execute(
                    "INSERT INTO player_game_log (player_name, team, opponent, season, week,"
                    " pass_attempts, completions, passing_yards, passing_touchdowns, interceptions,"
                    " red_zone_passes, red_zone_touchdowns) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    game_log_row(app, rows),
                )
                n_plays += len(rows)
                n_logs += 1
                players.add(app.qb.name)
            conn.executemany(
                "INSERT INTO market_lines (season, player_name, odds) VALUES (?, ?, ?)",
                [(season, qb.name, market_line(market_rng, qb)) for qb in qbs],
            )
            conn.executemany(
                "INSERT INTO game_log_imports (season, week, source, rows, imported_at)"
                " SELECT season, week, 'datagen', COUNT(*), ? FROM player_game_log"
                " WHERE season = ? AND week = ? GROUP BY season, week",
                [(imported_at, season, week) for week in range(1, weeks + 1)],
            )
    return Summary(plays=n_plays, game_log_rows=n_logs, quarterbacks=len(players))


def build_database(path: str, seed: int = SEED, now: datetime | None = None) -> Summary:
    """Create ``path`` with the schema and generated data, replacing any existing file.

    The database is built beside the target and moved into place, so a reader
    never sees a half-built file.
    """
    tmp = f"{path}.building"
    _remove(tmp)
    conn = connect(tmp)
    try:
        create_schema(conn)
        summary = generate(conn, seed=seed, now=now)
        conn.execute("ANALYZE")
    finally:
        conn.close()
    _remove(path)
    os.replace(tmp, path)
    return summary


def _remove(path: str) -> None:
    """Delete a database file with its WAL companions, if present."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)
