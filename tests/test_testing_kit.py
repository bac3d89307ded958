"""The testing kit itself: pins undo themselves, in any test order; clock and signal capture."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flask_v2rollout.testing import Clock, force_version, record_signals, shadow_sync, use_clock

HOST = Path(__file__).parent / "kit_host" / "test_host_with_kit.py"


@pytest.mark.parametrize("order", ["forward", "reversed"])
def test_pins_do_not_leak_whatever_the_order(order: str) -> None:
    names = ["test_marker_pins_v2", "test_unpinned_users_follow_the_flags", "test_force_version_in_a_block",
             "test_unpinned_users_follow_the_flags"]
    ids = [f"{HOST}::{n}" for n in (names if order == "forward" else names[::-1])]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", *ids],
        cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    executed = [line for line in run.stdout.splitlines() if "passed" in line]
    assert executed and " 3 passed" in " " + executed[-1]  # pytest runs a repeated id once


def test_force_version_rejects_bad_input(app) -> None:
    with pytest.raises(ValueError, match="'v1' or 'v2'"):
        with force_version(app, "calc", "v3"):
            pass
    with pytest.raises(KeyError):
        with force_version(app, "nope", "v2"):
            pass
    assert app.extensions["v2rollout"].pipeline.forced == {}


def test_nested_pins_restore_the_outer_one(app, ext) -> None:
    with force_version(app, "calc", "v2"):
        with force_version(app, "calc", "v1"):
            assert ext.calculate("calc", 3, user_id="u").version == "v1"
        assert ext.calculate("calc", 3, user_id="u").version == "v2"
    assert ext.calculate("calc", 3, user_id="u").version == "v1"


def test_clock_drives_windows(app, ext) -> None:
    clock = Clock(start=1_800_000_000)
    with use_clock(app, clock):
        ext.calculate("calc", 1, user_id="u")
        ext.flush()
        assert ext.metrics("calc", "5m")["arms"]["v1"]["calculations"] == 1
        assert clock.advance(minutes=10) == 1_800_000_600
        assert ext.metrics("calc", "5m")["arms"]["v1"]["calculations"] == 0
        assert ext.metrics("calc", "1h")["arms"]["v1"]["calculations"] == 1


def test_record_signals_and_shadow_sync(app, ext) -> None:
    with app.app_context():
        ext.set_flag("calc", "v2_shadow_mode_enabled", True, actor="t")
    with record_signals(app) as log, shadow_sync(app):
        ext.calculate("calc", 2, user_id="u")
        assert [n for n, _, _ in log.events] == ["version_assigned", "calculation_completed", "shadow_compared"]
    assert log.named("shadow_compared")[0]["version"] == "v2"
    with app.app_context():
        ext.calculate("calc", 2, user_id="u")
        ext.drain(5)
    assert len(log.events) == 3  # nothing recorded after the block
