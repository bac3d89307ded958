"""Text limits hold on PostgreSQL exactly as on SQLite: refused before any SQL, not by the column's size."""
from __future__ import annotations

from pathlib import Path

import pytest

from flask_v2rollout import V2Rollout
from flask_v2rollout.cli import cli
from helpers import build_app


@pytest.mark.parametrize("args, message", [
    (["set-flag", "--flag", "v2_rollout_percentage", "--value", "20", "--actor", "a" * 300],
     "actor must be at most 200 characters"),
    (["check", "zero_complaints", "--pass", "--actor", "a" * 201], "actor must be at most 200 characters"),
    (["rollback", "--target", "0", "--reason", "r" * 1001], "reason must be at most 1000 characters"),
])
def test_long_text_is_refused_the_same_on_postgres(postgres_server, tmp_path: Path, args: list[str],
                                                   message: str) -> None:
    uri = postgres_server.create_database(f"cli_{abs(hash(tuple(args))) % 10**8}")
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x)
    app, _ = build_app(tmp_path / "instance", ext, V2ROLLOUT_DATABASE_URI=uri)
    with app.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 10, actor="setup")
        before = (ext.flags("calc", fresh=True), ext.audit(limit=100), ext.checks("calc"))
    result = app.test_cli_runner().invoke(cli, args)
    assert result.exit_code == 1 and message in result.output, result.output
    assert "Traceback" not in result.output and "StringDataRightTruncation" not in result.output
    with app.app_context():
        assert (ext.flags("calc", fresh=True), ext.audit(limit=100), ext.checks("calc")) == before
