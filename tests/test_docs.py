"""The docs list what exists: config keys, tables, flags, CLI commands and options, ``--json`` schemas.

Each check reads the live lists (settings, models, click) when it runs, so a key, table, command or option added
anywhere without its doc line fails here; the ``*_fails_*`` tests show that on a temporary addition.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
import pytest
from sqlalchemy import Column, Integer, Table

from flask_v2rollout import FLAG_NAMES, V2Rollout, settings
from flask_v2rollout.cli import cli
from flask_v2rollout.models import metadata

DOCS = Path(__file__).resolve().parent.parent / "docs"


def first_cells(text: str) -> list[str]:
    """The first cell of every Markdown table row (header and separator rows included)."""
    return [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("|") and line.count("|") > 2]


def code_in_first_cells(text: str, pattern: str) -> set[str]:
    """Names matching ``pattern`` that open a code span of a first cell (`--rollout NAME` names --rollout)."""
    spans = (span for cell in first_cells(text) for span in re.findall(r"`([^`]+)`", cell))
    return {m.group(1) for span in spans if (m := re.fullmatch(rf"({pattern})(?: .*)?", span))}


def section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def assert_same(what: str, documented: set[str], live: set[str], where: str) -> None:
    missing, stale = sorted(live - documented), sorted(documented - live)
    assert not missing and not stale, f"{what}: not in {where}: {missing}; in {where} but gone: {stale}"


# -- configuration.md ----------------------------------------------------------------------------


def check_config_keys() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert_same("config keys", code_in_first_cells(section(text, "## All keys"), "V2ROLLOUT_[A-Z0-9_]+"),
                set(settings.DEFAULTS), "docs/configuration.md, All keys")


def check_tables() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert_same("tables", code_in_first_cells(section(text, "## Storage"), "v2rollout_[a-z_]+"),
                set(metadata.tables), "docs/configuration.md, Storage")


def check_flags() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert_same("flags", code_in_first_cells(section(text, "## Flags"), "v2_[a-z_]+"), set(FLAG_NAMES),
                "docs/configuration.md, Flags")


def test_configuration_lists_every_key_table_and_flag() -> None:
    check_config_keys()
    check_tables()
    check_flags()


def test_an_undocumented_key_fails_the_check(monkeypatch) -> None:
    monkeypatch.setitem(settings.DEFAULTS, "V2ROLLOUT_NEW_KNOB_S", 1.0)
    with pytest.raises(AssertionError, match=r"not in docs/configuration.md, All keys: \['V2ROLLOUT_NEW_KNOB_S'\]"):
        check_config_keys()


def test_an_undocumented_table_fails_the_check() -> None:
    table = Table("v2rollout_new_things", metadata, Column("id", Integer, primary_key=True))
    try:
        with pytest.raises(AssertionError, match=r"tables: not in .*\['v2rollout_new_things'\]"):
            check_tables()
    finally:
        metadata.remove(table)
    check_tables()


# -- cli.md --------------------------------------------------------------------------------------


def live_commands(group: click.Group = cli, prefix: str = "") -> dict[str, click.Command]:
    """Every command the group registers, sub-groups' as ``"group sub"``."""
    found: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found |= live_commands(command, f"{prefix}{name} ")
        else:
            found[prefix + name] = command
    return found


def cli_sections() -> dict[str, str]:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    parts = re.split(r"^## `flask v2rollout ([a-z0-9 -]+)`$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def check_cli() -> None:
    sections, commands = cli_sections(), live_commands()
    assert_same("commands", set(sections), set(commands), "docs/cli.md")
    for name, command in commands.items():
        options = {o for p in command.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}
        arguments = {p.name.upper() for p in command.params if isinstance(p, click.Argument) and p.name}
        assert_same(f"options of {name}", code_in_first_cells(sections[name], r"--[a-z0-9-]+"), options,
                    f"docs/cli.md, {name}")
        assert_same(f"arguments of {name}", code_in_first_cells(sections[name], r"[A-Z][A-Z0-9_]+"), arguments,
                    f"docs/cli.md, {name}")
        if "--json" in options:
            assert json_blocks(sections[name]), f"docs/cli.md, {name}: --json without its schema"


def test_cli_page_lists_every_command_option_and_argument() -> None:
    check_cli()


def test_an_undocumented_command_or_option_fails_the_check(monkeypatch) -> None:
    monkeypatch.setitem(cli.commands, "forecast", click.Command("forecast", callback=lambda: None))
    with pytest.raises(AssertionError, match=r"commands: not in docs/cli.md: \['forecast'\]"):
        check_cli()
    monkeypatch.delitem(cli.commands, "forecast")
    status = cli.commands["status"]
    monkeypatch.setattr(status, "params", [*status.params, click.Option(["--since"])])
    with pytest.raises(AssertionError, match=r"options of status: not in docs/cli.md, status: \['--since'\]"):
        check_cli()


# -- --json schemas ----------------------------------------------------------------------------------


def json_blocks(text: str) -> list[Any]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]


def assert_shape(schema: Any, actual: Any, path: str) -> None:
    """The keys the schema names are the keys printed; ``<…>`` keys stand for any keys."""
    if isinstance(schema, dict) and isinstance(actual, dict):
        free = [k for k in schema if k.startswith("<")]
        if free:
            for key, value in actual.items():
                assert_shape(schema[free[0]], value, f"{path}.{key}")
            return
        assert_same(f"keys of {path}", set(schema), set(actual), "the documented schema")
        for key, value in actual.items():
            assert_shape(schema[key], value, f"{path}.{key}")
    elif isinstance(schema, list) and isinstance(actual, list):
        if actual and schema:
            assert_shape(schema[0], actual[0], f"{path}[0]")
    else:
        assert isinstance(schema, str), f"{path}: the schema says {schema!r}, the command printed {actual!r}"


RULES = """
probes:
  - {name: data_age_hours, unit: h, description: hours since the last import}
rules:
  - {name: stale_data, condition: data_age_hours > 24 hours, severity: LOW, notify: [slack],
     description: the data is stale, action: run the importer}
"""

#: the command lines whose --json output each schema of a section describes, in the page's order
JSON_RUNS = {
    "alerts": [["alerts"], ["alerts", "--history"]],
    "check": [["check", "zero_complaints", "--pass", "--note", "queue clean"]],
    "replay": [["replay", "--from", "{inputs}"]],
}


def test_every_json_schema_has_the_keys_the_command_prints(make_app, tmp_path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text('{"rollout": "calc", "inputs": {"args": [3], "kwargs": {}}}\n')
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x, subject=lambda x: f"s{x % 3}")
    ext.probe("data_age_hours")(lambda: 30.0)
    app, _ = make_app(ext, V2ROLLOUT_RUNBOOK_FILE=str(tmp_path / "rules.yaml"), V2ROLLOUT_APPROVAL_ABOVE=5)
    with app.app_context():
        ext.flags("calc")  # the app has run once: its store exists (the CLI never creates one)
    r = app.test_cli_runner()
    assert r.invoke(cli, ["set-flag", "--flag", "v2_rollout_percentage", "--value", "10", "--actor", "a"]
                    ).exit_code == 3  # waits for approval #1
    assert r.invoke(cli, ["approve", "1", "--actor", "b"]).exit_code == 0
    with app.app_context():
        for i in range(40):
            ext.calculate("calc", i, user_id=f"u{i}")
        ext.flush()
    evaluated = r.invoke(cli, ["evaluate", "--json"])  # the stale probe fires: a transition, an active alert
    outputs = {("evaluate",): evaluated.output}
    for name, section_text in cli_sections().items():
        schemas = json_blocks(section_text)
        runs = JSON_RUNS.get(name, [[name]])
        if not schemas:
            continue
        assert len(schemas) == len(runs), name
        for schema, args in zip(schemas, runs, strict=True):
            args = [a.format(inputs=inputs) for a in args]
            output = outputs.get(tuple(args)) or r.invoke(cli, [*args, "--json"]).output
            printed = json.loads(output)
            assert printed, f"{args}: the fixture should make this non-empty"
            assert_shape(schema, printed, " ".join(args))


def test_a_printed_key_missing_from_its_schema_fails_the_check() -> None:
    with pytest.raises(AssertionError, match=r"keys of status\[0\]: not in the documented schema: \['since'\]"):
        assert_shape([{"rollout": "string"}], [{"rollout": "calc", "since": 1.0}], "status")
