"""The demo walks the runbook's first steps through audited writes, so a newcomer sees history in the dashboard."""
from __future__ import annotations

import threading
from collections.abc import Callable

from flask import Flask

from example_app.demo import DEMO_ACTOR, advance_to_canary, start_shadow
from example_app.rollout import ROLLOUT, rollout

AppFactory = Callable[..., Flask]


def test_the_demo_reaches_canary_through_shadow_with_audited_writes(make_app: AppFactory) -> None:
    app = make_app(V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 0, "v2_shadow_mode_enabled": False})
    assert start_shadow(app)
    assert advance_to_canary(app, shadow_s=0, stop=threading.Event()) == "advanced to the 10 % canary"
    with app.app_context():
        rows = list(reversed(rollout.audit(ROLLOUT)))
        flags = rollout.flags(ROLLOUT, fresh=True)
    assert [(r["flag"], r["old_value"], r["new_value"], r["actor"]) for r in rows] == [
        ("v2_shadow_mode_enabled", False, True, DEMO_ACTOR),
        ("v2_rollout_percentage", 0.0, 10.0, DEMO_ACTOR),
    ]
    assert rows[1]["reason"].startswith("demo: advance to the 10 % canary")
    assert flags["v2_rollout_percentage"] == 10 and flags["v2_shadow_mode_enabled"] is True
    # run again on the same database: the recorded history is kept, nothing is written
    assert not start_shadow(app)
    with app.app_context():
        assert rollout.audit_count(ROLLOUT) == 2


def test_a_demo_stopped_during_shadow_stays_in_shadow(make_app: AppFactory) -> None:
    app = make_app(V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 0, "v2_shadow_mode_enabled": False})
    stop = threading.Event()
    stop.set()
    assert start_shadow(app)
    assert advance_to_canary(app, shadow_s=60, stop=stop) == "stopped in shadow"
    with app.app_context():
        assert rollout.flags(ROLLOUT, fresh=True)["v2_rollout_percentage"] == 0
        assert rollout.audit_count(ROLLOUT) == 1
