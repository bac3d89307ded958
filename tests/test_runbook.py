"""The runbook as data: the packaged file, a host overlay through a real app, and all-or-nothing validation."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

import flask_v2rollout
from flask_v2rollout import V2Rollout
from flask_v2rollout.metrics.catalogue import CATALOGUE, Facts, values
from flask_v2rollout.rules.conditions import AlertRuleError
from flask_v2rollout.rules.runbook import load_runbook, parse_runbook
from flask_v2rollout.testing import Clock, use_clock

PACKAGE = Path(flask_v2rollout.__file__).parent
OVERLAY = """
gates:
  - name: canary_to_staged
    criteria:
      - name: p95
        condition: v2_p95_ms < 1ms
rules:
  - name: canary_slower_than_1ms
    condition: v2_p95_ms > 1ms and v2_rollout_percentage > 0
    severity: LOW
    notify: [slack]
    description: v2 slower than 1 ms
    action: look at the slow calls
"""


def overlay(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "runbook.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_host_file_changes_a_gate_threshold_and_adds_a_rule(make_app, tmp_path: Path) -> None:
    def slow_v2(x: int) -> int:
        time.sleep(0.005)
        return x

    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=slow_v2)
    app, _ = make_app(ext, V2ROLLOUT_RUNBOOK_FILE=str(overlay(tmp_path, OVERLAY)), V2ROLLOUT_GATE_MIN_CALCULATIONS=5,
                      V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 10})
    with use_clock(app, Clock(start=1_900_000_000)), app.app_context():
        for i in range(300):
            ext.calculate("calc", i, user_id=f"user-{i}")
        assert ext.flush()
        report = ext.evaluate()["calc"]
        gate = ext.gate("calc")
    assert [(t["rule"], t["kind"]) for t in report["transitions"]] == [("canary_slower_than_1ms", "fired")]
    p95 = next(c for c in gate["criteria"] if c["name"] == "p95")
    assert (p95["threshold"], p95["verdict"]) == ("v2_p95_ms < 1ms", "fail")
    assert gate["decision"] == "NO-GO" and any("'p95 < 500 ms' fails" in r for r in gate["reasons"])
    error_rate = next(c for c in gate["criteria"] if c["name"] == "error_rate")
    assert error_rate["threshold"] == (  # the rest of the gate is the packaged one
        "pass: v2_error_rate_pct < 1%; fail: v2_error_rate_pct >= 1% and v2_minus_v1_error_rate_pct > 0%")


def test_broken_host_file_stops_init_app_with_file_rule_and_column(make_app, tmp_path: Path) -> None:
    path = overlay(tmp_path, OVERLAY.replace("v2_p95_ms < 1ms", "v2_p95_msec < 1ms")
                   .replace("description: v2 slower than 1 ms", "description: v2 slower\n    summary: x"))
    ext = V2Rollout()
    ext.register("calc", v1=abs, v2=abs)
    with pytest.raises(AlertRuleError) as info:
        make_app(ext, V2ROLLOUT_RUNBOOK_FILE=str(path))
    message = str(info.value)
    assert f"{path}: rule 'canary_to_staged/p95' (column 1): unknown metric 'v2_p95_msec'" in message
    assert f"{path}: rule 'canary_slower_than_1ms': unknown field(s) ['summary']" in message
    assert message.startswith(f"{path}: 2 problem(s)")


def test_merge_semantics() -> None:
    host = """
stages:
  - {name: canary, min_duration: 2h}
probes:
  - {name: queue_depth, unit: count, description: jobs waiting}
manual_checks:
  higher_quality: results look better
  legal_ok: Legal signed off
gates:
  - name: canary_to_staged
    shoulds_required: 1
    criteria:
      - {name: legal, kind: must, condition: check_legal_ok == 1}
      - {name: queue, kind: blocker, description: Queue too deep, condition: queue_depth > 100}
matrices:
  canary:
    rows:
      - {severity: HIGH, signals: [queue_depth > 1000], action: reduce to 5 %, target: 5}
    otherwise: keep watching
rules:
  - name: v2_slow_queries
    condition: v2_p95_ms > 800ms
    for: 10m
    keep_firing_for: 15m
    severity: MEDIUM
    notify: [slack]
    description: slow
    action: check
"""
    book = parse_runbook([("packaged.yaml", (PACKAGE / "rules" / "runbook.yaml").read_text()), ("host.yaml", host)])
    assert [s.min_duration_s for s in book.stages][:2] == [24 * 3600, 2 * 3600]
    canary = book.gates[1]
    assert canary.shoulds_required == 1
    assert [c.name for c in canary.criteria][-2:] == ["legal", "queue"]
    legal = canary.criteria[-2]
    assert legal.description == "Legal signed off" and legal.manual
    assert next(c for c in canary.criteria if c.name == "quality").description == "results look better"
    assert [r.severity for r in book.matrices["canary"].rows] == ["CRITICAL", "HIGH", "MEDIUM"]
    assert book.matrices["canary"].otherwise == "keep watching"
    assert book.matrices["staged"] == load_runbook().matrices["staged"]
    slow = book.rules["v2_slow_queries"]
    assert (slow.condition.text, slow.for_s, slow.keep_firing_s) == ("v2_p95_ms > 800ms", 600, 900)
    assert [r.name for r in book.rules] == [r.name for r in load_runbook().rules]  # replaced in place
    assert book.sources == ("packaged.yaml", "host.yaml")


@pytest.mark.parametrize("host,message", [
    ("gates:\n  - {name: nope, shoulds_required: 1}\n", "no gate named 'nope' to change"),
    ("stages:\n  - {name: canary, min_duration: soon}\n", "min_duration: expected a duration"),
    ("stages:\n  - {name: moon, min_duration: 1h}\n", "no stage named 'moon'"),
    ("gates:\n  - {name: full_review, to: shadow}\n", "may change only"),
    ("gates:\n  - name: full_review\n    criteria:\n      - {name: x, kind: must}\n",
     "rule 'full_review/x': a criterion needs either condition, or both pass and fail"),
    ("gates:\n  - name: full_review\n    criteria:\n      - {name: x, kind: maybe, condition: v2_p95_ms > 1}\n",
     "kind must be one of must, should, blocker"),
    ("matrices:\n  canary:\n    rows:\n      - {severity: HIGH, signals: [v2_p95_ms > 5%], action: a, target: 5}\n",
     "rule 'canary/HIGH' (column 11): '>' compares ms (time) with % (percent)"),
    ("matrices:\n  canary:\n    rows:\n      - {severity: HIGH, signals: [v2_vs_v1_conversion_pct * 2 < 80%], "
     "action: a, target: 5}\n", "'v2_vs_v1_conversion_pct' is an interval"),
    ("probes:\n  - {name: v2_p95_ms, unit: ms, description: d}\n", "not a catalogue metric"),
    ("probes:\n  - {name: depth, unit: parsecs, description: d}\n", "unit must be one of"),
    ("extras: {}\n", "unknown top-level key(s) ['extras']"),
    ("rules:\n  - {name: a}\n  - {name: a}\n", "rule 'a': duplicate rule name"),
    ("rules:\n  - just text\n", "rule '#18': a rule must be a mapping"),
    ("gates:\n  - {name: full_review, shoulds_required: x}\n", "shoulds_required must be a whole number"),
    ("gates:\n  - {name: full_review, shoulds_required: 9}\n", "more than the gate's should criteria"),
    ("matrices:\n  full:\n    rows: []\n", "rule 'matrix full': otherwise must be non-empty text"),
    ("stages:\n  - {name: canary, percentage: 99}\n", "stages must be listed in rising percentage"),
    ("manual_checks: [a]\n", "'manual_checks' must be a mapping"),
    ("rules: [\n", "not valid YAML"),
    ("- just a list\n", "expected a mapping with the sections"),
    ("!!python/object/apply:os.system [echo hi]\n", "not valid YAML"),
])
def test_host_file_problems_are_refused_with_the_file(host: str, message: str) -> None:
    packaged = (PACKAGE / "rules" / "runbook.yaml").read_text()
    with pytest.raises(AlertRuleError) as info:
        parse_runbook([("runbook.yaml", packaged), ("host.yaml", host)])
    assert message in str(info.value)
    assert "host.yaml" in str(info.value)


def test_missing_host_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AlertRuleError, match="cannot read the runbook file"):
        load_runbook(tmp_path / "absent.yaml")


def test_the_packaged_runbook_is_the_runbooks() -> None:
    book = load_runbook()
    assert [(s.name, s.percentage, s.shadow) for s in book.stages] == [
        ("shadow", 0, True), ("canary", 10, False), ("staged", 50, False), ("full", 100, False)]
    assert [g.name for g in book.gates] == ["shadow_to_canary", "canary_to_staged", "staged_to_full", "full_review"]
    assert set(book.matrices) == {"canary", "staged", "general"}
    assert len(book.rules) == 17 and set(book.probes) == {"data_source_age_hours", "v2_data_coverage_pct"}
    read = {m for g in book.gates for c in g.criteria for m in c.condition.metrics}
    read |= {m for mx in book.matrices.values() for row in mx.rows for s in row.signals for m in s.condition.metrics}
    read |= book.rules.metrics
    assert read <= set(book.metrics)


def test_every_catalogue_metric_is_declared_once_with_its_unit() -> None:
    names = [m.name for m in CATALOGUE]
    assert len(names) == len(set(names))
    assert all(m.description and m.unit for m in CATALOGUE)
    assert all(m.unit.label == "%" for m in CATALOGUE if m.name.endswith("_pct"))
    assert all(m.unit.label == "ms" for m in CATALOGUE if m.name.endswith("_ms"))


def test_a_window_reads_no_data_where_there_is_none() -> None:
    window = {"arms": {"v2": {"users": 99, "conversion_rate_pct": 5.0, "calculations": 0, "error_rate_pct": None},
                       "v1": {"users": 150, "conversion_rate_pct": 6.0}}, "db_errors": 0, "probes": {}}
    named = values(Facts(window, percentage=10.0), probes={"data_source_age_hours": None})
    assert named["v2_conversion_rate_pct"] is None and named["v1_conversion_rate_pct"] == 6.0  # users minimum
    assert named["v2_error_rate_pct"] is None and named["v2_calculations"] == 0
    assert named["shadow_runs"] is None and named["critical_incidents_in_stage"] is None
    assert named["data_source_age_hours"] is None and named["v2_rollout_percentage"] == 10.0
    assert set(named) == {m.name for m in CATALOGUE} | {"data_source_age_hours"}


def test_the_core_package_knows_no_football() -> None:
    """``grep -riE "qb|game.?log|touchdown|edge|matchup|V2_CONFIG"`` over rules/, metrics/, decisions/: every file."""
    pattern = re.compile(rb"qb|game.?log|touchdown|edge|matchup|V2_CONFIG", re.IGNORECASE)
    found = [str(path.relative_to(PACKAGE)) for folder in ("rules", "metrics", "decisions")
             for path in sorted((PACKAGE / folder).rglob("*")) if path.is_file() and pattern.search(path.read_bytes())]
    assert found == []


def test_the_packaged_file_is_safe_yaml() -> None:
    yaml.safe_load((PACKAGE / "rules" / "runbook.yaml").read_text(encoding="utf-8"))
