"""Weekly game-log import from a CSV file: validate everything, then write in one transaction.

A week's file is authoritative for that week: importing it again replaces the
week. A single bad row rejects the whole file, so the game log never holds
half a week (v2 would silently see fewer red-zone attempts and fall back).
"""
from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from .nfl import MAX_PLAYER_NAME_LENGTH, TEAMS, normalize_player_name, normalize_team
from .players import canonical_spellings

COUNT_COLUMNS: tuple[str, ...] = (
    "pass_attempts", "completions", "passing_yards", "passing_touchdowns",
    "interceptions", "red_zone_passes", "red_zone_touchdowns",
)
COLUMNS: tuple[str, ...] = ("player_name", "team", "opponent", *COUNT_COLUMNS)
#: Largest single-game value accepted (the passing-yards record is 554).
MAX_COUNT = 999
#: (smaller, larger): relations every box score satisfies.
_BOUNDS: tuple[tuple[str, str], ...] = (
    ("completions", "pass_attempts"),
    ("interceptions", "pass_attempts"),
    ("red_zone_passes", "pass_attempts"),
    ("passing_touchdowns", "completions"),
    ("red_zone_touchdowns", "red_zone_passes"),
    ("red_zone_touchdowns", "passing_touchdowns"),
)


class GameLogImportError(ValueError):
    """The file was rejected; ``row`` (1 = first data row) and ``field`` say where."""

    def __init__(self, message: str, *, row: int | None = None, field: str | None = None) -> None:
        where = []
        if row is not None:
            where.append(f"row {row} (line {row + 1})")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.row = row
        self.field = field


@dataclass(frozen=True)
class ImportResult:
    season: int
    week: int
    rows: int
    replaced: int
    imported_at: str


def _count(raw: str | None, row: int, field: str) -> int:
    text = (raw or "").strip()
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_COUNT:
        raise GameLogImportError(f"must be a whole number from 0 to {MAX_COUNT}, got {raw!r}", row=row, field=field)
    return int(text)


def _team(raw: str | None, row: int, field: str) -> str:
    team = normalize_team(raw or "")
    if team not in TEAMS:
        raise GameLogImportError(f"unknown team {raw!r} (expected one of the 32 abbreviations)", row=row, field=field)
    return team


def parse_rows(records: Iterable[dict[str, str | None]], spellings: dict[str, str]) -> list[dict[str, object]]:
    """Validated, normalized rows; raises :class:`GameLogImportError` on the first problem."""
    out: list[dict[str, object]] = []
    seen: dict[str, int] = {}
    for row, record in enumerate(records, start=1):
        if None in record:
            raise GameLogImportError("more values than header columns", row=row)
        name = normalize_player_name(record.get("player_name") or "")
        if not name:
            raise GameLogImportError("must not be empty", row=row, field="player_name")
        if len(name) > MAX_PLAYER_NAME_LENGTH:
            raise GameLogImportError(f"longer than {MAX_PLAYER_NAME_LENGTH} characters", row=row, field="player_name")
        name = spellings.get(name.casefold(), name)
        if name in seen:
            raise GameLogImportError(f"{name} is already in row {seen[name]}", row=row, field="player_name")
        seen[name] = row
        parsed: dict[str, object] = {
            "player_name": name,
            "team": _team(record.get("team"), row, "team"),
            "opponent": _team(record.get("opponent"), row, "opponent"),
        }
        if parsed["team"] == parsed["opponent"]:
            raise GameLogImportError("a team cannot play itself", row=row, field="opponent")
        for field in COUNT_COLUMNS:
            parsed[field] = _count(record.get(field), row, field)
        for small, large in _BOUNDS:
            if parsed[small] > parsed[large]:  # type: ignore[operator]
                raise GameLogImportError(
                    f"{parsed[small]} is more than {large} ({parsed[large]})", row=row, field=small
                )
        out.append(parsed)
    if not out:
        raise GameLogImportError("the file has no data rows")
    return out


def read_csv(stream: TextIO, spellings: dict[str, str]) -> list[dict[str, object]]:
    """Parse and validate a whole CSV file (header row required)."""
    reader = csv.DictReader(stream)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise GameLogImportError(f"header lacks column(s) {', '.join(missing)}", field=missing[0])
    return parse_rows(reader, spellings)


def import_game_log(
    conn: sqlite3.Connection, path: str, season: int, week: int, now: datetime | None = None
) -> ImportResult:
    """Import one week's CSV; nothing is written unless every row is valid."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as stream:
            rows = read_csv(stream, canonical_spellings(conn))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise GameLogImportError(f"not a readable UTF-8 CSV file ({exc})") from None
    imported_at = (now or datetime.now(UTC)).isoformat(timespec="seconds")
    with conn:
        replaced = conn.execute(
            "DELETE FROM player_game_log WHERE season = ? AND week = ?", (season, week)
        ).rowcount
        conn.executemany(
            f"INSERT INTO player_game_log (season, week, {', '.join(COLUMNS)})"
            f" VALUES (?, ?, {', '.join('?' for _ in COLUMNS)})",
            [(season, week, *(r[c] for c in COLUMNS)) for r in rows],
        )
        conn.execute(
            "INSERT INTO game_log_imports (season, week, source, rows, imported_at) VALUES (?, ?, ?, ?, ?)",
            (season, week, path, len(rows), imported_at),
        )
    return ImportResult(season, week, len(rows), replaced, imported_at)
