"""Hostile rule files are refused quickly and cleanly: aliases, deep nesting, huge numbers, huge text.

Each refusal is an ``AlertRuleError`` naming the file (and rule and column where there is one), raised in
well under a second, with a message of bounded length.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from flask_v2rollout import V2Rollout
from flask_v2rollout.rules.alerts import parse_rules
from flask_v2rollout.rules.conditions import AlertRuleError, parse_condition, parse_duration
from flask_v2rollout.rules.runbook import load_runbook
from helpers import build_app

ALIAS_BOMB = "\n".join(["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
                       + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)])
RULE = """rules:
  - name: {name}
    condition: "{condition}"
    severity: LOW
    notify: [slack]
    description: d
    action: a
"""
METRICS = {"v2_error_rate_pct", "v2_p95_ms", "v2_calculations"}


def refused_quickly(load: Callable[[], object]) -> AlertRuleError:
    started = time.perf_counter()
    with pytest.raises(AlertRuleError) as caught:
        load()
    assert time.perf_counter() - started < 1.0
    assert len(str(caught.value)) < 2000, "the message quotes a bounded part of the input"
    return caught.value


def host_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "runbook.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_an_alias_bomb_is_refused(tmp_path: Path) -> None:
    assert len(ALIAS_BOMB) < 800
    error = refused_quickly(lambda: load_runbook(host_file(tmp_path, ALIAS_BOMB)))
    assert "aliases (*name) are not allowed" in str(error) and str(tmp_path / "runbook.yaml") in str(error)
    refused_quickly(lambda: parse_rules(ALIAS_BOMB, METRICS))


def test_an_alias_bomb_stops_init_app_at_once(tmp_path: Path) -> None:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x)
    started = time.perf_counter()
    with pytest.raises((AlertRuleError, RuntimeError), match="aliases"):
        build_app(tmp_path / "instance", ext, V2ROLLOUT_RUNBOOK_FILE=str(host_file(tmp_path, ALIAS_BOMB)))
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("text", ["rules: " + "[" * 5000 + "]" * 5000, "rules:\n" + "".join(
    "  " * i + "- \n" for i in range(200)), "rules: " + "{a: " * 3000 + "1" + "}" * 3000])
def test_deeply_nested_yaml_is_refused(tmp_path: Path, text: str) -> None:
    error = refused_quickly(lambda: load_runbook(host_file(tmp_path, text)))
    assert "nested more than 32 levels deep" in str(error)


def test_a_huge_file_is_refused(tmp_path: Path) -> None:
    error = refused_quickly(lambda: load_runbook(host_file(tmp_path, "# " + "x" * 1_100_000 + "\n")))
    assert "larger than 1000000 bytes" in str(error)


@pytest.mark.parametrize("depth, message", [(5000, "characters long; at most 2000"),
                                            (100, "nested more than 32 levels deep")])
@pytest.mark.parametrize("nest", [lambda n: "(" * n + "v2_p95_ms > 1" + ")" * n,
                                  lambda n: "not " * n + "v2_p95_ms > 1",
                                  lambda n: "v2_p95_ms > " + "- " * n + "1"])
def test_deep_conditions_are_refused_with_rule_and_column(tmp_path: Path, nest: Callable[[int], str], depth: int,
                                                          message: str) -> None:
    error = refused_quickly(lambda: load_runbook(host_file(tmp_path, RULE.format(name="deep",
                                                                                 condition=nest(depth)))))
    problem = error.problems[0]
    assert problem.rule == "deep" and message in problem.message
    assert problem.file == str(tmp_path / "runbook.yaml") and problem.column is not None
    assert "RecursionError" not in str(error)


@pytest.mark.parametrize("condition, message", [
    ("v2_p95_ms > 1e999 for 1e999 h", "number too large"),
    ("v2_p95_ms > 1 for 1e307 h", "number too large"),
    ("v2_p95_ms > 1e308 s", "number too large"),
    ("v2_error_rate_pct > " + "9" * 400, "number too large"),
    ("v2_p95_ms > 1 and " * 300 + "v2_p95_ms > 1", "at most 2000"),
    ("v2_p95_ms > 1 and " + "x" * 1500 + " > 1", "unknown metric"),
])
def test_huge_numbers_and_text_in_conditions_are_refused(tmp_path: Path, condition: str, message: str) -> None:
    error = refused_quickly(lambda: load_runbook(host_file(tmp_path, RULE.format(name="big", condition=condition))))
    assert error.problems[0].rule == "big" and message in error.problems[0].message
    refused_quickly(lambda: parse_condition(condition, METRICS))


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1.0e+999", "9" * 400])
def test_non_finite_numbers_anywhere_in_the_file_are_refused(tmp_path: Path, value: str) -> None:
    text = f"stages:\n  - name: canary\n    percentage: {value}\n"
    error = refused_quickly(lambda: load_runbook(host_file(tmp_path, text)))
    assert "number out of range" in str(error) and "stages[0].percentage" in str(error)


def test_durations_refuse_overflow() -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_duration("1e308h")


def test_error_messages_quote_only_part_of_a_huge_value(tmp_path: Path) -> None:
    text = "gates:\n  - name: " + "g" * 100_000 + "\n"
    error = refused_quickly(lambda: load_runbook(host_file(tmp_path, text)))
    assert "g" * 200 not in str(error)
