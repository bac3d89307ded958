"""``flask --app example_app …`` commands: build, import, simulate, validate."""
from __future__ import annotations

import os
import sys
from datetime import UTC, date, datetime
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from . import datagen, importer, quality, validate
from .db import connect, database_path
from .players import players_in_season
from .simulate import simulate


def _existing_database() -> str:
    path = database_path()
    if not os.path.exists(path):
        raise click.ClickException(f"{path} does not exist; run `flask --app example_app init-db` first")
    return path


@click.command("init-db")
@click.option("--force", is_flag=True, help="Rebuild the database even if it exists.")
@with_appcontext
def init_db_command(force: bool) -> None:
    """Build the domain database with the generated 2024 and 2025 data."""
    path = database_path()
    if os.path.exists(path) and not force:
        click.echo(f"{path} already exists; use --force to rebuild it")
        return
    summary = datagen.build_database(path)
    click.echo(
        f"built {path}: {summary.plays} plays, {summary.game_log_rows} game-log rows,"
        f" {summary.quarterbacks} quarterbacks"
    )


class WeekParam(click.ParamType[int | str, Any]):
    """A week number 1–22, or ``current`` (the week today falls in, from ``NFL_SEASON_START``)."""

    name = "week"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        text = str(value).strip().lower()
        if text == "current":
            return text
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 22):
            self.fail("must be a week number from 1 to 22, or 'current'", param, ctx)
        return int(text)


def _resolve_week(week: int | str) -> int:
    if week != "current":
        return int(week)
    try:
        start = date.fromisoformat(str(current_app.config["NFL_SEASON_START"]))
        return quality.current_week(start, datetime.now(UTC).date())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--week") from None


@click.command("import-game-log")
@click.option("--season", type=click.IntRange(1920, 2100), help="Default: NFL_SEASON.")
@click.option("--week", type=WeekParam(), required=True, help="1–22, or 'current'.")
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False), required=True,
              help="CSV with a header row: " + ", ".join(importer.COLUMNS))
@with_appcontext
def import_game_log_command(season: int | None, week: int | str, csv_path: str) -> None:
    """Import one week of the game log; a file with any bad row imports nothing."""
    season = int(current_app.config["NFL_SEASON"]) if season is None else season
    week = _resolve_week(week)
    conn = connect(_existing_database())
    try:
        result = importer.import_game_log(conn, csv_path, season, week)
    except importer.GameLogImportError as exc:
        raise click.ClickException(f"{csv_path}: {exc}; nothing was imported") from None
    finally:
        conn.close()
    click.echo(
        f"imported {result.rows} rows for {season} week {week}"
        f" (replaced {result.replaced}) at {result.imported_at}"
    )


@click.command("simulate")
@click.option("--users", type=click.IntRange(min=1), default=5000, show_default=True)
@click.option("--rps", type=click.FloatRange(min=0.1, max=1000), default=50.0, show_default=True)
@click.option("--duration", type=click.FloatRange(min=0.1), help="Seconds to run (default 60 unless --count).")
@click.option("--count", type=click.IntRange(min=1), help="Number of edge requests to send.")
@click.option("--url", default="http://127.0.0.1:5000", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--allow-remote", is_flag=True, help="Allow a target that is not a loopback address.")
@with_appcontext
def simulate_command(users: int, rps: float, duration: float | None, count: int | None,
                     url: str, seed: int, allow_remote: bool) -> None:
    """Send edge requests for random users, players and opponents; some users convert."""
    conn = connect(_existing_database(), read_only=True)
    try:
        players = players_in_season(conn, int(current_app.config["NFL_SEASON"]))
    finally:
        conn.close()
    if duration is None and count is None:
        duration = 60.0
    try:
        report = simulate(url, players, users=users, rps=rps, duration=duration, count=count,
                          seed=seed, allow_remote=allow_remote)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(report.summary())


@click.command("validate")
@click.option("--season", type=int, default=2024, show_default=True)
@with_appcontext
def validate_command(season: int) -> None:
    """Phase-2 validation of v2 against v1; exits 1 on NO-GO."""
    conn = connect(_existing_database(), read_only=True)
    try:
        report = validate.run_validation(conn, season)
    finally:
        conn.close()
    click.echo(validate.format_report(report))
    if validate.decide(report)[0] == "NO-GO":
        sys.exit(1)


@click.group("nfl")
def nfl_group() -> None:
    """Upkeep of the domain database (the runbook's index and VACUUM/ANALYZE steps)."""


@nfl_group.command("create-indexes")
@with_appcontext
def create_indexes_command() -> None:
    """Recreate any missing index (the runbook's three on the game log, and v1's and v2's own)."""
    path = _existing_database()
    present = quality.create_indexes(path)
    click.echo(f"{path}: indexes present: {', '.join(present)}")


@nfl_group.command("maintain")
@with_appcontext
def maintain_command() -> None:
    """VACUUM; ANALYZE; — recorded, so `flask v2rollout verify` can tell it was done."""
    path = _existing_database()
    ran_at, seconds = quality.maintain(path)
    click.echo(f"{path}: VACUUM; ANALYZE; done at {ran_at} in {seconds:.3f} s")


def init_app(app: Flask) -> None:
    for command in (init_db_command, import_game_log_command, simulate_command, validate_command, nfl_group):
        app.cli.add_command(command)
