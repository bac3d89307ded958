"""A real Chromium drives the dashboard: sign in, move the rollout with the form, roll it back.

The app is served by a real werkzeug server on 127.0.0.1; screenshots land in
``test-artifacts/`` for a human to look at, and with ``UPDATE_SCREENSHOTS=1``
(``make screenshots``) the documentation's pictures in ``docs/img/`` are refreshed too.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from werkzeug.serving import make_server

from flask_v2rollout import V2Rollout
from flask_v2rollout.testing import Clock, use_clock
from helpers import build_app, join, require

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "browser-test-token-0123456789"
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def shoot(page: Any, name: str, *, full_page: bool = False, height: int | None = None) -> None:
    """A screenshot in test-artifacts/, and in docs/img/ when UPDATE_SCREENSHOTS=1 (``height``: the page's top)."""
    clip = None if height is None else {"x": 0, "y": 0, "width": page.viewport_size["width"], "height": height}
    folders = [ARTIFACTS] + ([DOCS_IMG] if os.environ.get("UPDATE_SCREENSHOTS") == "1" else [])
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=folder / name, full_page=full_page or clip is not None, clip=clip)


def seed_an_hour_of_traffic(app: Flask, ext: V2Rollout) -> None:
    """Sixty past minutes of calls at 10 %, flushed minute by minute, so the charts have lines."""
    with app.app_context(), use_clock(app, Clock(time.time() - 3600)) as clock:
        ext.set_flags("calc", {"v2_rollout_percentage": 10, "v2_shadow_mode_enabled": True}, actor="ops",
                      reason="canary")
        for minute in range(60):
            for i in range(20 + minute % 7 * 3):
                ext.calculate("calc", i, user_id=f"user-{minute}-{i}")
            ext.drain(5)
            ext.flush()
            clock.advance(minutes=1)


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[tuple[str, Flask, V2Rollout]]:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x + (0 if x % 4 else 5))
    app, _ = build_app(tmp_path / "instance", ext, V2ROLLOUT_ADMIN_TOKEN=TOKEN, V2ROLLOUT_ADMIN_REFRESH_S=1,
                       V2ROLLOUT_METRICS_FLUSH_S=3600)
    seed_an_hour_of_traffic(app, ext)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v2rollout", app, ext
    finally:
        server.shutdown()
        join(thread)


def test_operator_moves_and_rolls_back_a_rollout(dashboard: tuple[str, Flask, V2Rollout]) -> None:
    require(os.path.exists(CHROMIUM), f"Debian's chromium is not installed at {CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    base, app, ext = dashboard
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        try:
            page.goto(base + "/rollouts/calc")
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            page.screenshot(path=ARTIFACTS / "dashboard-1-sign-in.png")
            page.get_by_label("Admin token").fill(TOKEN)
            page.get_by_role("button", name="Sign in").click()

            percentage = page.locator("#current-percentage")
            expect(percentage).to_have_text("10 %")
            expect(page.locator(".decision").first).to_be_visible()
            page.screenshot(path=ARTIFACTS / "dashboard-2-canary.png", full_page=True)

            page.get_by_label("Rollout percentage").fill("50")
            page.locator("#pct-reason").fill("canary healthy for 48 h")
            page.get_by_role("button", name="Set percentage").click()
            expect(page.locator(".notice-success")).to_contain_text("10 % → 50 %")
            expect(percentage).to_have_text("50 %")
            newest = page.locator("ol.audit li").first
            expect(newest).to_contain_text("Rollout percentage 10 % → 50 %")
            expect(newest).to_contain_text("token")
            expect(newest).to_contain_text("canary healthy for 48 h")
            page.screenshot(path=ARTIFACTS / "dashboard-3-staged.png", full_page=True)

            page.get_by_role("button", name="Emergency rollback…").click()
            expect(page.get_by_role("heading", name="Confirm rollback of calc")).to_be_visible()
            page.get_by_label("Reason").fill("error spike")
            page.screenshot(path=ARTIFACTS / "dashboard-4-confirm-rollback.png")
            page.get_by_role("button", name="Roll back to 0 %").click()
            expect(percentage).to_have_text("0 %")
            expect(page.locator("ol.audit li").first).to_contain_text("50 % → 0 %")
            page.screenshot(path=ARTIFACTS / "dashboard-5-rolled-back.png", full_page=True)

            # The live panel refreshes itself: a change made elsewhere shows up without a reload.
            with app.app_context():
                ext.set_flag("calc", "v2_rollout_percentage", 5, actor="cli", reason="elsewhere")
            expect(percentage).to_have_text("5 %")
            assert page.url.endswith("/v2rollout/rollouts/calc")
            assert problems == [], problems
        finally:
            browser.close()


# -- a rollout with history: shadow, canary, staged, an alert -------------------------------------------------------


def v2_with_a_bad_patch(x: int) -> int:
    """v2 of the staged rollout: agrees with v1 mostly; ``x`` ≥ 10 000 is the minutes of the error spike."""
    if x >= 10_000 and x % 20 == 0:
        raise RuntimeError("bad patch")
    return x % 10_000 + (0 if x % 5 else 1)


def seed_three_stages(app: Flask, ext: V2Rollout) -> None:
    """Three hours as an operator lives them, written through the audited API minute by minute:
    shadow (1 h), canary 10 % (1 h, with a 12-minute lull without calls), staged 50 % (1 h) with
    an error spike in its last 25 minutes that fires the error alerts."""
    with app.app_context(), use_clock(app, Clock(time.time() - 3 * 3600 - 60)) as clock:
        ext.set_flags("calc", {"v2_shadow_mode_enabled": True}, actor="ops", reason="start shadow comparisons")
        for minute in range(180):
            if minute == 60:
                ext.set_flags("calc", {"v2_rollout_percentage": 10, "v2_shadow_mode_enabled": False}, actor="ops",
                              reason="shadow healthy: advance to canary")
            if minute == 120:
                ext.set_flag("calc", "v2_rollout_percentage", 50, actor="ops",
                             reason="canary healthy: advance to staged")
            if not 85 <= minute < 97:
                spike = 10_000 if minute >= 155 else 0
                for i in range(30 + minute % 7 * 4):
                    user = f"user-{(minute * 37 + i) % 1500}"
                    with app.test_request_context(headers={"X-User": user}):
                        ext.calculate("calc", spike + minute * 40 + i)
                        if (minute + i) % 4 == 0:
                            ext.track_conversion("calc")
            ext.drain(5)
            ext.evaluate()
            clock.advance(minutes=1)


@pytest.fixture
def staged_dashboard(tmp_path: Path) -> Iterator[tuple[str, Flask, V2Rollout]]:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x % 10_000, v2=v2_with_a_bad_patch)
    ext.user_loader(lambda: request.headers.get("X-User"))
    app, _ = build_app(tmp_path / "instance", ext, V2ROLLOUT_ADMIN_TOKEN=TOKEN, V2ROLLOUT_ADMIN_REFRESH_S=0,
                       V2ROLLOUT_GATE_MIN_USERS=50, V2ROLLOUT_GATE_MIN_CALCULATIONS=100,
                       V2ROLLOUT_STAGE_DURATIONS={"shadow": 1800, "canary": 3600, "staged": 7200})
    seed_three_stages(app, ext)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v2rollout", app, ext
    finally:
        server.shutdown()
        join(thread)


def test_operator_steps_back_one_stage_and_sees_the_audit_row(
    staged_dashboard: tuple[str, Flask, V2Rollout],
) -> None:
    require(os.path.exists(CHROMIUM), f"Debian's chromium is not installed at {CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    base, app, ext = staged_dashboard
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        try:
            page.goto(base + "/")
            expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
            shoot(page, "dashboard-sign-in.png")
            page.get_by_label("Admin token").fill(TOKEN)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="Rollouts")).to_be_visible()
            expect(page.locator("table.overview")).to_contain_text("rev ")
            shoot(page, "dashboard-index.png")

            page.get_by_role("link", name="calc").click()
            percentage = page.locator("#current-percentage")
            expect(percentage).to_have_text("50 %")
            page.get_by_role("link", name="Last 6 hours").click()
            # the history shows on the charts: shadow on, the two advances, and the alerts the spike fired
            expect(page.locator("#chart-errors .marker-change")).to_have_count(3)
            expect(page.locator("#chart-errors .marker-alert").first).to_be_attached()
            expect(page.locator(".kpi-bad").first).to_contain_text("v2 error rate")
            expect(page.locator(".kpi-ok").first).to_be_visible()
            expect(page.locator(".criteria")).to_contain_text("not triggered")
            expect(page.locator(".criteria")).to_contain_text("× v1")
            expect(page.locator(".guardrails svg").first).to_be_visible()
            expect(page.locator("#next-action")).to_contain_text("Autopilot")
            shoot(page, "dashboard.png", height=1240)
            shoot(page, "dashboard-full.png", full_page=True)

            page.get_by_role("button", name="One stage back (50 % → 10 %)…").click()
            expect(page.get_by_role("heading", name="Confirm rollback of calc")).to_be_visible()
            expect(page.locator(".confirm-change")).to_contain_text("50 %")
            expect(page.locator(".pct-to")).to_have_text("10 %")
            page.get_by_label("Reason").fill("error spike after the 50 % step")
            shoot(page, "dashboard-rollback-confirm.png")
            page.get_by_role("button", name="Roll back to 10 %").click()

            expect(percentage).to_have_text("10 %")
            expect(page.locator(".notice-success")).to_contain_text("50 % → 10 %")
            newest = page.locator("ol.audit li").first
            expect(newest).to_contain_text("Rollout percentage 50 % → 10 %")
            expect(newest).to_contain_text("error spike after the 50 % step")
            expect(page.locator("#chart-errors .marker-rollback")).to_have_count(1)
            page.get_by_role("link", name="Last 6 hours").click()
            expect(page.locator("#chart-errors .marker-change")).to_have_count(3)
            expect(page.locator("#chart-errors .marker-rollback")).to_have_count(1)
            shoot(page, "dashboard-after-rollback.png", height=1240)

            page.get_by_role("link", name="Full audit log").click()
            changes = page.locator("table").first.locator("tbody tr")
            first = changes.first
            expect(first).to_contain_text("50 % → 10 %")
            expect(first).to_contain_text("token")
            expect(changes).to_have_count(5)
            shoot(page, "dashboard-audit.png", full_page=True)
            with app.app_context():
                assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 10
            assert problems == [], problems
        finally:
            browser.close()
