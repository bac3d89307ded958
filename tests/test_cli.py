"""`flask v2rollout …`: every command works, and bad input exits non-zero with the reason."""
from __future__ import annotations

import json

import pytest

from flask_v2rollout import V2Rollout
from flask_v2rollout.cli import cli


@pytest.fixture
def runner(make_app):
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x)
    app, _ = make_app(ext)
    with app.app_context():
        ext.flags("calc")  # the app has run once, so its store exists (the CLI never creates one)
    return app.test_cli_runner(), ext, app


def invoke(runner, *args: str):
    return runner.invoke(cli, list(args))


def test_status_set_flag_rollback_audit(runner) -> None:
    r, ext, app = runner
    assert invoke(r, "status").output.startswith("calc: 0% v2")
    result = invoke(r, "set-flag", "--flag", "v2_rollout_percentage", "--value", "12.5", "--reason", "canary",
                    "--actor", "alice")
    assert result.exit_code == 0 and "0.0 -> 12.5" in result.output
    result = invoke(r, "rollback", "--target", "0", "--reason", "spike", "--actor", "bob")
    assert result.exit_code == 0 and "12.5% -> 0%" in result.output
    rows = json.loads(invoke(r, "audit", "--json").output)
    assert [(x["actor"], x["flag"]) for x in rows] == [  # a rollback to 0 is back to shadow mode
        ("bob", "v2_shadow_mode_enabled"), ("bob", "v2_rollout_percentage"), ("alice", "v2_rollout_percentage")]
    assert [x["reason"] for x in rows] == ["spike", "spike", "canary"]
    status = json.loads(invoke(r, "status", "--json").output)
    assert status[0]["flags"]["v2_rollout_percentage"] == 0.0


def test_read_commands_give_json(runner) -> None:
    r, ext, app = runner
    for args in (["gate"], ["alerts"], ["alerts", "--history"], ["metrics"], ["evaluate"], ["verify"]):
        result = invoke(r, *args, "--json")
        assert result.exit_code in (0, 1), result.output  # verify fails: no log file configured
        json.loads(result.output)


def test_gate_advance_and_manual_checks(runner) -> None:
    r, ext, app = runner
    assert "INCONCLUSIVE" in invoke(r, "gate").output
    result = invoke(r, "advance")
    assert result.exit_code == 1 and "INCONCLUSIVE" in result.output
    assert invoke(r, "checks").output == "calc: gate shadow_to_canary (stage shadow) reads no manual check\n"
    invoke(r, "set-flag", "--flag", "v2_rollout_percentage", "--value", "10")  # canary
    listed = invoke(r, "checks")
    assert listed.exit_code == 0 and listed.output.splitlines() == [
        "calc: gate canary_to_staged (stage canary), manual checks:",
        "  pending  zero_complaints  Zero user complaints attributable to v2",
        "  pending  higher_quality   v2 results perceived as higher quality",
    ]
    result = invoke(r, "check", "zero_complaints", "--pass", "--note", "support queue clean", "--actor", "lead")
    assert result.exit_code == 0 and "PASS by lead" in result.output
    listed = json.loads(invoke(r, "checks", "--json").output)
    assert (listed["rollout"], listed["stage"], listed["gate"]) == ("calc", "canary", "canary_to_staged")
    first = listed["checks"][0]
    assert (first["check"], first["passed"], first["actor"], first["note"]) == (
        "zero_complaints", True, "lead", "support queue clean")
    shown = invoke(r, "checks").output
    assert "  PASS     zero_complaints  Zero user complaints attributable to v2  by lead at " in shown


def test_check_outside_the_current_gate_is_refused_with_the_valid_ones_and_records_nothing(runner) -> None:
    r, ext, app = runner
    invoke(r, "set-flag", "--flag", "v2_rollout_percentage", "--value", "10")
    result = invoke(r, "check", "team_confident", "--pass")  # a check of the staged gate, not canary's
    assert result.exit_code == 2
    assert ("'team_confident' is not a manual check of the current gate (canary_to_staged, stage canary); "
            "its manual checks: zero_complaints, higher_quality (flask v2rollout checks); nothing was recorded"
            ) in " ".join(result.output.split())
    with app.app_context():
        assert all(c["passed"] is None for c in ext.checks("calc"))
    assert invoke(r, "check", "higher_quality", "--fail").exit_code == 0


def test_verify_reports_each_check_and_fails_on_any_fail(runner) -> None:
    r, ext, app = runner

    @ext.verify_check("data_fresh")
    def fresh():
        return False, "last import 30 h ago"

    result = invoke(r, "verify")
    assert result.exit_code == 1
    assert "PASS  flag_store" in result.output
    assert "FAIL  log_directory_writable: V2ROLLOUT_LOG_FILE is not set" in result.output
    assert "FAIL  data_fresh: last import 30 h ago" in result.output


@pytest.mark.parametrize("args,message", [
    (["set-flag", "--flag", "v2_percent", "--value", "10"], "unknown flag 'v2_percent'"),
    (["set-flag", "--flag", "v2_rollout_percentage", "--value", "10%"], "must be a number from 0 to 100"),
    (["set-flag", "--flag", "v2_rollout_percentage", "--value", "100.001"], "between 0 and 100"),
    (["set-flag", "--flag", "v2_rollout_percentage", "--value", "NaN"], "finite"),
    (["set-flag", "--flag", "v2_shadow_mode_enabled", "--value", "yes"], "must be true or false"),
    (["set-flag", "--flag", "v2_rollout_percentage"], "Missing option '--value'"),
    (["set-flag", "--flag", "v2_rollout_percentage", "--value", "5", "--rollout", "nope"], "unknown rollout 'nope'"),
    (["rollback", "--target", "50"], "above the current percentage"),
    (["rollback", "--target", "-1"], "between 0 and 100"),
    (["rollback", "--target", "abc"], "must be a number"),
    (["audit", "--limit", "0"], "Invalid value for '--limit'"),
    (["audit", "--rollout", "nope"], "unknown rollout"),
    (["status", "--rollout", "nope"], "unknown rollout"),
    (["metrics", "--window", "5x"], "window must look like"),
    (["gate", "--rollout", "nope"], "unknown rollout"),
    (["advance"], "INCONCLUSIVE"),
    (["alerts", "--rollout", "nope"], "unknown rollout"),
    (["check", "bogus", "--pass"], "'bogus' is not a manual check of the current gate"),
    (["check", "team_confident"], "say --pass or --fail"),
    (["check", "team_confident", "--pass"], "shadow_to_canary, stage shadow); that gate reads no manual check"),
    (["verify", "--bogus"], "No such option"),
    (["evaluate", "extra"], "unexpected extra argument"),
])
def test_bad_input_exits_non_zero_with_the_reason_and_changes_nothing(runner, args, message) -> None:
    r, ext, app = runner
    with app.app_context():
        before = (ext.flags("calc", fresh=True), len(ext.audit(limit=1000)))
    result = invoke(r, *args)
    assert result.exit_code != 0
    assert message in result.output
    with app.app_context():
        assert (ext.flags("calc", fresh=True), len(ext.audit(limit=1000))) == before


def test_rollout_is_required_when_several_exist(make_app) -> None:
    ext = V2Rollout()
    ext.register("a", v1=abs, v2=abs)
    ext.register("b", v1=abs, v2=abs)
    app, _ = make_app(ext)
    result = app.test_cli_runner().invoke(cli, ["set-flag", "--flag", "v2_rollout_percentage", "--value", "5"])
    assert result.exit_code == 2 and "--rollout is required" in result.output and "a, b" in result.output


MIGRATION_COMMANDS = [["status"], ["gate"], ["metrics"], ["alerts"], ["alerts", "--history"], ["audit"],
                      ["approvals"], ["evaluate"], ["checks"], ["check", "team_confident", "--pass"],
                      ["set-flag", "--flag", "v2_shadow_mode_enabled", "--value", "true"], ["rollback"]]


def test_tables_never_migrated_give_a_one_line_hint_and_change_nothing(make_app, tmp_path) -> None:
    """V2ROLLOUT_CREATE_TABLES off and no migration: every command says what to run, exits 1, no traceback."""
    import sqlite3

    from sqlalchemy import create_engine, inspect

    from flask_v2rollout.models import metadata

    path = tmp_path / "host.db"
    sqlite3.connect(path).execute("CREATE TABLE host_table (id INTEGER)").connection.close()
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x)
    app, _ = make_app(ext, V2ROLLOUT_CREATE_TABLES=False, V2ROLLOUT_DATABASE_URI=f"sqlite:///{path}")
    r = app.test_cli_runner()
    for args in MIGRATION_COMMANDS:
        result = invoke(r, *args)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (args, result.output)
        lines = result.output.strip().splitlines()
        assert lines[-1].startswith("Error: the v2rollout tables are missing (v2rollout_"), (args, result.output)
        assert "`flask db upgrade`" in lines[-1] and "V2ROLLOUT_CREATE_TABLES=True" in lines[-1]
        assert "Traceback" not in result.output
    assert inspect(create_engine(f"sqlite:///{path}")).get_table_names() == ["host_table"]

    verify = json.loads(invoke(r, "verify", "--json").output)
    by_name = {row["check"]: row for row in verify}
    for name in ("flag_store", "metrics_flush", "starting_point[calc]"):
        assert by_name[name]["status"] == "FAIL" and "tables are missing" in by_name[name]["detail"], by_name[name]

    metadata.create_all(create_engine(f"sqlite:///{path}"))  # the migration runs: the same app now works
    assert invoke(r, "status").output.startswith("calc: 0% v2")
    assert {row["check"]: row["status"] for row in json.loads(invoke(r, "verify", "--json").output)}[
        "metrics_flush"] == "PASS"
