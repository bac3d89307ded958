"""Fixtures for the example app: the generated database (built once) and apps on copies of it."""
from __future__ import annotations

import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

# Plain `pytest` (unlike `python -m pytest`) does not put the project root on
# sys.path, and example_app is not an installed package.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from example_app import create_app  # noqa: E402
from example_app.datagen import build_database  # noqa: E402
from example_app.db import connect, create_schema  # noqa: E402

AppFactory = Callable[..., Flask]
#: When the generated weeks count as imported (keeps time-dependent probes deterministic).
GENERATED_AT = datetime(2025, 10, 21, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def generated_at() -> datetime:
    return GENERATED_AT


@pytest.fixture(scope="session")
def generated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The deterministic generated database, built once per test session; never modify it."""
    path = tmp_path_factory.mktemp("generated") / "nfl_betting.db"
    build_database(str(path), now=GENERATED_AT)
    return path


@pytest.fixture
def generated_conn(generated_db: Path) -> Iterator[sqlite3.Connection]:
    conn = connect(str(generated_db), read_only=True)
    yield conn
    conn.close()


@pytest.fixture
def make_app(tmp_path: Path, generated_db: Path) -> AppFactory:
    """An app on a private copy of the generated data; keyword arguments override config."""

    def factory(**config: Any) -> Flask:
        instance = tmp_path / "instance"
        instance.mkdir(exist_ok=True)
        database = instance / "nfl_betting.db"
        if not database.exists():
            shutil.copyfile(generated_db, database)
        return create_app({
            "TESTING": True,
            "SECRET_KEY": "test",
            "NFL_DATABASE": str(database),
            "V2ROLLOUT_DATABASE_URI": f"sqlite:///{tmp_path / 'v2rollout.db'}",
            "V2ROLLOUT_LOG_FILE": None,
            "V2ROLLOUT_FLAG_READ_BUDGET_MS": 10_000,  # tests assert what the first request sees
            "V2ROLLOUT_DEFAULTS": {"v2_rollout_percentage": 0, "v2_shadow_mode_enabled": False},
            **config,
        }, instance_path=str(instance))

    return factory


@pytest.fixture
def app(make_app: AppFactory) -> Flask:
    return make_app()


@pytest.fixture
def hand_db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """An empty schema for tests that write their own rows."""
    conn = connect(str(tmp_path / "hand.db"))
    create_schema(conn)
    yield conn
    conn.close()
