"""A real Chromium drives the dashboard: sign in, move the rollout with the form, roll it back.

The app is served by a real werkzeug server on 127.0.0.1; screenshots land in
``test-artifacts/`` for a human to look at.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

from flask_v2rollout import V2Rollout
from flask_v2rollout.testing import Clock, use_clock
from helpers import build_app, join, require

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "browser-test-token-0123456789"


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
