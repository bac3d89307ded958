"""E2E fixtures: a throwaway PostgreSQL, real gunicorn masters, an OTLP receiver (helpers in ``support``)."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import require

from .support import (
    PG_BIN,
    GunicornServer,
    OtlpReceiver,
    PostgresServer,
    postgres,
    postgres_user_exists,
    start_gunicorn,
)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server per session (initdb is the slow part); tests isolate with ``create_database``."""
    require((PG_BIN / "pg_ctl").is_file(), f"PostgreSQL 15 binaries not found in {PG_BIN}")
    require(os.geteuid() != 0 or postgres_user_exists(), "running as root needs a 'postgres' system user")
    with postgres(PG_BIN) as server:
        yield server


@pytest.fixture
def gunicorn_server(tmp_path: Path) -> Iterator[Callable[..., GunicornServer]]:
    """``start(app_spec, **options)`` → a serving gunicorn (options as ``support.start_gunicorn``).

    Every server started is stopped (SIGTERM, graceful) at teardown; logs stay in ``tmp_path / "gunicorn"``.
    """
    with contextlib.ExitStack() as servers:
        def start(app_spec: str, **options: Any) -> GunicornServer:
            server = start_gunicorn(app_spec, tmp_path / "gunicorn", **options)
            servers.callback(server.stop)
            return server

        yield start


@pytest.fixture
def otlp_receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver
