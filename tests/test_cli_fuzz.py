"""Hostile command-line input: a clear error, exit status non-zero, nothing changed, never a traceback."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskCliRunner

from flask_v2rollout import V2Rollout
from flask_v2rollout.cli import cli
from helpers import build_app

PCT = "v2_rollout_percentage"
UNDECODABLE = os.fsdecode(b"caf\xe9 \xff")  # Latin-1 bytes on a UTF-8 command line


@pytest.fixture
def runner(tmp_path: Path) -> tuple[FlaskCliRunner, V2Rollout, Flask]:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x)
    app, _ = build_app(tmp_path / "instance", ext)
    with app.app_context():
        ext.set_flag("calc", PCT, 10, actor="setup")
    return app.test_cli_runner(), ext, app


def state(app: Flask, ext: V2Rollout) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    with app.app_context():
        return ext.flags("calc", fresh=True), ext.audit(limit=1000), ext.checks("calc")


CASES = [
    (["set-flag", "--flag", PCT, "--value", "20", "--reason", UNDECODABLE], "not valid UTF-8"),
    (["rollback", "--target", "0", "--reason", UNDECODABLE], "not valid UTF-8"),
    (["check", "zero_complaints", "--pass", "--note", UNDECODABLE], "not valid UTF-8"),
    (["set-flag", "--flag", PCT, "--value", "20", "--actor", UNDECODABLE], "not valid UTF-8"),
    (["set-flag", "--flag", UNDECODABLE, "--value", "20"], "not valid UTF-8"),
    (["set-flag", "--flag", PCT, "--value", "20", "--actor", "a" * 300], "actor must be at most 200 characters"),
    (["rollback", "--target", "0", "--actor", "a" * 201], "actor must be at most 200 characters"),
    (["check", "zero_complaints", "--pass", "--actor", "a" * 300], "actor must be at most 200 characters"),
    (["set-flag", "--flag", PCT, "--value", "20", "--reason", "r" * 1001], "reason must be at most 1000 characters"),
    (["check", "zero_complaints", "--pass", "--note", "n" * 2001], "note must be at most 2000 characters"),
    (["set-flag", "--flag", PCT, "--value", "20", "--reason", "ansi \x1b[2J"], "control characters"),
    (["set-flag", "--flag", PCT, "--value", "1_0"], "ASCII digits"),
    (["set-flag", "--flag", PCT, "--value", "\u0661\u0660"], "ASCII digits"),  # Arabic-Indic 10
    (["set-flag", "--flag", PCT, "--value", "\uff15"], "ASCII digits"),  # full-width 5
    (["rollback", "--target", "\u0660"], "ASCII digits"),
    (["rollback", "--target", "0_0"], "ASCII digits"),
    (["set-flag", "--flag", PCT, "--value", "1e-400"], "at most 2 decimals"),
    (["set-flag", "--flag", PCT, "--value", "12.3456"], "at most 2 decimals"),
    (["set-flag", "--flag", PCT, "--value", "1e99999"], "ASCII digits"),
    (["set-flag", "--flag", PCT, "--value", "-1"], "between 0 and 100"),
    (["set-flag", "--flag", PCT, "--value", "NaN"], "finite"),
    (["set-flag", "--flag", PCT, "--value", "Infinity"], "finite"),
    (["audit", "--limit", "1_0"], "whole number from 1 to 1000"),
    (["audit", "--limit", "\u0661\u0660"], "whole number from 1 to 1000"),
]


@pytest.mark.parametrize("args, message", CASES)
def test_bad_arguments_are_clean_errors_and_change_nothing(runner: tuple[FlaskCliRunner, V2Rollout, Flask],
                                                           args: list[str], message: str) -> None:
    cli_runner, ext, app = runner
    before = state(app, ext)
    result = cli_runner.invoke(cli, args)
    assert result.exit_code in (1, 2), result.output
    assert message in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert state(app, ext) == before


def test_minus_zero_is_stored_as_zero(runner: tuple[FlaskCliRunner, V2Rollout, Flask]) -> None:
    cli_runner, ext, app = runner
    result = cli_runner.invoke(cli, ["set-flag", "--flag", PCT, "--value", "-0", "--reason", "off"])
    assert result.exit_code == 0, result.output
    flags, audit, _ = state(app, ext)
    assert flags[PCT] == 0 and math.copysign(1, flags[PCT]) == 1
    assert audit[0]["new_value"] == 0 and math.copysign(1, audit[0]["new_value"]) == 1
    assert "-0" not in cli_runner.invoke(cli, ["status"]).output


def test_undecodable_bytes_from_a_real_shell(tmp_path: Path) -> None:
    """The bytes as a terminal with another encoding sends them, through ``python -m flask``."""
    app_file = tmp_path / "cliapp.py"
    app_file.write_text(
        "from flask import Flask\nfrom flask_v2rollout import V2Rollout\n"
        f"app = Flask('cliapp', instance_path={str(tmp_path / 'instance')!r})\n"
        "ext = V2Rollout(app)\next.register('calc', v1=lambda x: x, v2=lambda x: x)\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "LC_ALL": "C.UTF-8", "PYTHONUTF8": "1"}
    # The app has served once, so its store exists (flask v2rollout commands never create one).
    serve_once = "from cliapp import app, ext\nwith app.app_context(): ext.flags('calc')"
    served = subprocess.run([sys.executable, "-c", serve_once], capture_output=True, env=env, cwd=tmp_path, timeout=60)
    assert served.returncode == 0, served.stderr
    base = [sys.executable.encode(), b"-m", b"flask", b"--app", b"cliapp", b"v2rollout"]
    run = subprocess.run([*base, b"set-flag", b"--flag", PCT.encode(), b"--value", b"20", b"--reason",
                          b"caf\xe9"], capture_output=True, env=env, cwd=tmp_path, timeout=60)
    assert run.returncode == 2, run.stderr
    assert b"not valid UTF-8" in run.stderr and b"Traceback" not in run.stderr
    status = subprocess.run([*base, b"status", b"--json"], capture_output=True, env=env, cwd=tmp_path, timeout=60)
    assert json.loads(status.stdout)[0]["flags"][PCT] == 0
