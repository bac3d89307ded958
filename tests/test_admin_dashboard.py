"""The rollout page reads at a glance: gate rows in their own units with intervals, guardrail charts over the
stage, coloured tiles, stepped charts with markers, gradual rollback steps and the autopilot's next action."""
from __future__ import annotations

import html as entities
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient

from flask_v2rollout import V2Rollout
from flask_v2rollout.admin import wording
from flask_v2rollout.testing import Clock, use_clock
from helpers import build_app

TOKEN = "s3cret-admin-token-for-dashboard-tests"
PAGE = "/v2rollout/rollouts/calc"


def v2(x: int) -> int:
    """Fails on every 10th call of the "bad" inputs (x >= 1000), agrees with v1 otherwise."""
    if x >= 1000 and x % 10 == 0:
        raise RuntimeError("bad input")
    return x % 1000


def make(tmp_path: Path, **config: Any) -> tuple[Flask, V2Rollout]:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x % 1000, v2=v2)
    ext.user_loader(lambda: request.headers.get("X-User"))
    return build_app(tmp_path / "instance", ext, V2ROLLOUT_ADMIN_TOKEN=TOKEN, V2ROLLOUT_ADMIN_REFRESH_S=0,
                     V2ROLLOUT_GATE_MIN_USERS=20, V2ROLLOUT_GATE_MIN_CALCULATIONS=50, **config)


def traffic(app: Flask, ext: V2Rollout, clock: Clock, minutes: int, *, per_minute: int = 40, bad: bool = False,
            convert_every: int = 3, offset: int = 0) -> None:
    """``minutes`` of calls by distinct-ish users, a conversion every ``convert_every`` calls, flushed each minute."""
    for minute in range(minutes):
        for i in range(per_minute):
            n = offset + minute * per_minute + i
            with app.test_request_context(headers={"X-User": f"u{n % 600}"}):
                ext.calculate("calc", (1000 if bad else 0) + n % 1000)
                if n % convert_every == 0:
                    ext.track_conversion("calc")
        ext.evaluate()
        clock.advance(minutes=1)


def sign_in(client: FlaskClient) -> str:
    login = client.get("/v2rollout/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login)
    assert csrf
    assert client.post("/v2rollout/login", data={"token": TOKEN, "csrf_token": csrf.group(1)}).status_code == 303
    return csrf.group(1)


@pytest.fixture
def canary(tmp_path: Path) -> Iterator[tuple[Flask, V2Rollout, Clock]]:
    """A rollout advanced to canary through audited writes 40 minutes ago, with traffic since."""
    app, ext = make(tmp_path)
    with app.app_context(), use_clock(app, Clock(time.time() - 41 * 60)) as clock:
        ext.set_flags("calc", {"v2_rollout_percentage": 10}, actor="ops", reason="advance to canary")
        traffic(app, ext, clock, 40)
        yield app, ext, clock


def criteria_rows(html: str) -> dict[str, str]:
    """Criterion description → its row's text (tags stripped, whitespace collapsed)."""
    table = html[html.index('<table class="table criteria">'):html.index("</table>", html.index("criteria"))]
    rows = {}
    for row in re.findall(r"<tr class=\"[^\"]*\">(.*?)</tr>", table, re.S):
        text = entities.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip())
        rows[text.split(" ", 1)[1]] = text
    return rows


def row_for(rows: dict[str, str], start: str) -> str:
    return next(text for key, text in rows.items() if key.startswith(start))


def test_gate_rows_show_value_interval_and_threshold_in_the_criterions_units(
    canary: tuple[Flask, V2Rollout, Clock],
) -> None:
    app, ext, _ = canary
    client = app.test_client()
    sign_in(client)
    html = client.get(PAGE).get_data(as_text=True)
    rows = criteria_rows(html)
    conversion = row_for(rows, "Conversion ≥ 95 % of v1")
    assert "≥ 0.95 × v1" in conversion and "fails: whole interval < 0.95 × v1" in conversion
    gate = ext.gate("calc")
    reported = next(c for c in gate["criteria"] if c["name"] == "conversion")
    assert reported["interval"] is not None and reported["interval"]["metric"] == "v2_vs_v1_conversion_pct"
    low, high = reported["interval"]["lower"] / 100, reported["interval"]["upper"] / 100
    assert f"{low:.2f} to {high:.2f} × v1" in conversion
    assert f"{reported['value'] / 100:.2f} × v1" in conversion
    error = row_for(rows, "Error rate < 1 % for 48 h")
    assert "< 1 %" in error and re.search(r"\d %", error) and "0.01" not in error
    assert "not triggered" in row_for(rows, "Error rate > 2 %")
    assert "p = " in row_for(rows, "assignment is broken") and "p < 0.001" in row_for(rows, "assignment is broken")
    table = html[html.index('<table class="table criteria">'):html.index("</table>", html.index("criteria"))]
    assert "_pct" not in table and "v2_vs_v1" not in table and ">pass<" not in row_for(rows, "Error rate > 2 %")
    assert f"flags rev {ext.flag_version('calc')}" in html


def test_a_triggered_blocker_says_so(tmp_path: Path) -> None:
    app, ext = make(tmp_path, V2ROLLOUT_AUTO_ROLLBACK=False)
    client = app.test_client()
    with app.app_context(), use_clock(app, Clock(time.time() - 21 * 60)) as clock:
        ext.set_flags("calc", {"v2_rollout_percentage": 10}, actor="ops")
        traffic(app, ext, clock, 20, bad=True, per_minute=150)
        sign_in(client)
        rows = criteria_rows(client.get(PAGE).get_data(as_text=True))
    # 10 % of v2's calls fail against none of v1's: the error blocker has its evidence
    assert "TRIGGERED" in row_for(rows, "Error rate > 2 %")


def test_the_guardrail_history_is_what_the_gate_read_at_each_time(canary: tuple[Flask, V2Rollout, Clock]) -> None:
    app, ext, clock = canary
    history = ext.gate_history("calc", points=2)
    assert set(history["metrics"]) >= {"v2_vs_v1_conversion_pct", "v2_minus_v1_error_rate_pct"}

    def read(name: str) -> Any:
        return next(c["interval"] for c in ext.gate("calc")["criteria"] if c["name"] == name)

    halfway, last = history["metrics"]["v2_minus_v1_error_rate_pct"]
    assert halfway["at"] < last["at"] == pytest.approx(clock())
    conversion = read("conversion")
    assert conversion is not None
    assert (history["metrics"]["v2_vs_v1_conversion_pct"][-1]["lower"],
            history["metrics"]["v2_vs_v1_conversion_pct"][-1]["upper"]) == pytest.approx(
        (conversion["lower"], conversion["upper"]))
    now = read("error_rate")
    assert (last["lower"], last["upper"]) == pytest.approx((now["lower"], now["upper"]))
    clock.advance(halfway["at"] - clock())  # back to halfway: what the gate read then is the history's first point
    then = read("error_rate")
    assert (halfway["lower"], halfway["upper"]) == pytest.approx((then["lower"], then["upper"]))
    assert then["upper"] - then["lower"] > now["upper"] - now["lower"]  # the interval narrows as calls add up
    with pytest.raises(ValueError):
        ext.gate_history("calc", points=0)


def test_each_guardrail_is_charted_with_its_band_and_thresholds(canary: tuple[Flask, V2Rollout, Clock]) -> None:
    app, _, _ = canary
    client = app.test_client()
    sign_in(client)
    html = client.get(PAGE).get_data(as_text=True)
    chart = re.search(r'<svg class="chart band-chart" id="guardrail-v2_vs_v1_conversion_pct".*?</svg>', html, re.S)
    assert chart is not None
    svg = chart.group(0)
    assert 'class="interval-band"' in svg and 'class="estimate"' in svg and 'class="reference"' in svg
    # the must (fails below 0.95 × v1) and the blocker (below 0.90 × v1)
    assert "must 0.95×" in svg and "blocker 0.90×" in svg
    assert 'id="guardrail-v2_minus_v1_error_rate_pct"' in html


def test_tiles_are_coloured_against_their_targets(tmp_path: Path) -> None:
    app, ext = make(tmp_path, V2ROLLOUT_AUTO_ROLLBACK=False)
    client = app.test_client()
    with app.app_context(), use_clock(app, Clock(time.time() - 11 * 60)) as clock:
        ext.set_flags("calc", {"v2_rollout_percentage": 50}, actor="ops")
        traffic(app, ext, clock, 10, bad=True)
        sign_in(client)
        html = client.get(PAGE).get_data(as_text=True)
    by_label = {label: state for state, label in
                re.findall(r'<div class="kpi kpi-(\w+)"><span class="kpi-label">([^<]+)</span>', html)}
    assert by_label["v2 error rate"] == "bad"  # 10 % against < 1 %
    assert by_label["v2 p95"] == "ok"
    assert by_label["Shadow agreement"] == "none"  # shadow is off: no data, no colour
    assert "off target" in html and "target &lt; 0.5 %" in html  # the staged gate's must


def test_charts_step_leave_gaps_and_mark_changes_rollbacks_and_alerts(tmp_path: Path) -> None:
    app, ext = make(tmp_path, V2ROLLOUT_AUTO_ROLLBACK=False)
    client = app.test_client()
    with app.app_context(), use_clock(app, Clock(time.time() - 31 * 60)) as clock:
        ext.set_flags("calc", {"v2_rollout_percentage": 50}, actor="ops", reason="staged")
        traffic(app, ext, clock, 8)
        clock.advance(minutes=6)  # six minutes without a call
        traffic(app, ext, clock, 8, bad=True, offset=5000)
        ext.rollback("calc", 10, actor="ops", reason="errors")
        traffic(app, ext, clock, 6, offset=9000)
        sign_in(client)
        html = client.get(PAGE).get_data(as_text=True)
        fired = [e for e in ext.alert_history("calc") if e["event"] == "fired"]
    assert fired, "the bad minutes fire an alert"
    calls = re.search(r'<svg class="chart" id="chart-calculations".*?</svg>', html, re.S)
    assert calls is not None
    v1_path = re.search(r'<path class="series step line-v1" d="([^"]+)"', calls.group(0))
    assert v1_path is not None
    # stepped (horizontal runs), and the six silent minutes break it into separate runs
    assert " H" in v1_path.group(1) and v1_path.group(1).count("M") >= 2
    errors = re.search(r'<svg class="chart" id="chart-errors".*?</svg>', html, re.S)
    assert errors is not None
    assert errors.group(0).count('class="marker marker-change"') == 1
    assert errors.group(0).count('class="marker marker-rollback"') == 1
    assert 'class="marker marker-alert"' in errors.group(0)
    assert 'class="target-band"' in errors.group(0)
    assert "rollback: percentage 50 → 10 % by ops" in errors.group(0)


def test_one_stage_back_and_a_chosen_lower_step(tmp_path: Path) -> None:
    app, ext = make(tmp_path)
    client = app.test_client()
    with app.app_context():
        ext.set_flags("calc", {"v2_rollout_percentage": 50}, actor="ops")
    csrf = sign_in(client)
    html = client.get(PAGE).get_data(as_text=True)
    assert "One stage back (50 % → 10 %)…" in html
    steps = re.search(r'<select id="rollback-step" name="target">(.*?)</select>', html, re.S)
    assert steps is not None and re.findall(r'value="([\d.]+)"', steps.group(1)) == ["25", "10", "5", "0"]
    confirm = client.get(f"{PAGE}/rollback?target=25").get_data(as_text=True)
    assert "50 %" in confirm and "Roll back to 25 %" in confirm and "first 25 % of buckets" in confirm
    done = client.post(f"{PAGE}/rollback", data={"csrf_token": csrf, "target": "10", "confirm": "yes",
                                                 "reason": "one stage back"})
    assert done.status_code == 303
    with app.app_context():
        newest = ext.audit("calc", limit=1)[0]
    assert (newest["old_value"], newest["new_value"], newest["reason"]) == (50.0, 10.0, "one stage back")
    after = client.get(PAGE).get_data(as_text=True)
    assert "One stage back (10 % → 0 %)…" in after
    # no call since the rollback: no guardrail chart drawn from nothing, a word instead
    assert 'id="guardrails-waiting"' in after and "band-chart" not in after


def test_alerts_and_gate_say_when_they_were_last_evaluated(tmp_path: Path) -> None:
    app, ext = make(tmp_path, V2ROLLOUT_AUTO_ROLLBACK=False)
    client = app.test_client()
    with app.app_context(), use_clock(app, Clock(time.time() - 11 * 60)) as clock:
        ext.set_flags("calc", {"v2_rollout_percentage": 50}, actor="ops")
        traffic(app, ext, clock, 10, bad=True)
        clock.advance(minutes=-1)
        sign_in(client)
        html = client.get(PAGE).get_data(as_text=True)
    alerts = html[html.index('id="alerts-h"'):html.index('id="checks-h"')]
    assert re.search(r"last evaluated (\d+ (s|min) ago|just now) \(\d\d:\d\d:\d\d UTC\)", alerts)
    assert "last evaluated" in html[html.index('id="gate-h"'):html.index("criteria")]


def test_the_next_action_of_the_autopilot(canary: tuple[Flask, V2Rollout, Clock]) -> None:
    app, ext, _ = canary
    client = app.test_client()
    sign_in(client)
    off = client.get(PAGE).get_data(as_text=True)
    assert "Autopilot off" in off[off.index('id="next-action"'):]
    with app.app_context():
        ext.set_flag("calc", "v2_autopilot_enabled", True, actor="ops")
    on = client.get(PAGE).get_data(as_text=True)
    box = on[on.index('id="next-action"'):on.index("</div>", on.index('id="next-action"'))]
    # canary needs 48 h; 40 minutes are done
    assert "Advance to Staged" in box and re.search(r"not before 4\d\.\d h from now", box)


@pytest.mark.parametrize(("text", "words"), [
    ("v2_vs_v1_conversion_observed_pct >= 95% and v2_vs_v1_conversion_pct > 90%",
     "≥ 0.95 × v1 and whole interval > 0.90 × v1"),
    ("v2_error_rate_pct < 1%", "< 1 %"),
    ("shadow_agreement_rate_pct >= 60% and shadow_agreement_rate_pct <= 85%", "60–85 %"),
    ("v2_p95_ms < 1s", "< 1000 ms"),
    ("shadow_p95_ms / v1_p95_ms < 2", "< 2 × v1"),
    ("srm_p_value < 0.001", "p < 0.001"),
    ("v2_error_rate_pct >= 1% and v2_minus_v1_error_rate_pct > 0%",
     "≥ 1 % and error rate vs v1 (whole interval) > 0 pts"),
    ("rollbacks_in_stage > 1", "> 1"),
    ("weird(thing) > 1", "weird(thing) > 1"),
])
def test_conditions_read_as_people_say_them(text: str, words: str) -> None:
    assert wording.condition_text(text) == words


@pytest.mark.parametrize(("seconds", "text"), [(0, "0 s"), (59, "59 s"), (600, "10 min"), (172800, "48.0 h"),
                                               (None, "–")])
def test_durations_read_in_one_unit_above_an_hour(seconds: float | None, text: str) -> None:
    assert wording.duration(seconds) == text


def test_the_api_serves_the_gate_history(canary: tuple[Flask, V2Rollout, Clock]) -> None:
    app, _, _ = canary
    client = app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    history = client.get("/v2rollout/api/rollouts/calc/gate/history?points=3", headers=auth)
    assert history.status_code == 200 and history.json["stage"] == "canary"
    assert [len(points) for points in history.json["metrics"].values()] == [3] * len(history.json["metrics"])
    assert client.get("/v2rollout/api/rollouts/calc/gate/history?points=0", headers=auth).status_code == 400
    assert client.get("/v2rollout/api/rollouts/nope/gate/history", headers=auth).status_code == 404
