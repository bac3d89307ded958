"""Example app of Flask-V2Rollout: QB touchdown edges moving from v1 to v2.

``flask --app example_app init-db`` builds the data, ``flask --app example_app
run`` serves it, ``python -m example_app.demo`` does both and adds traffic.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask

from . import api, cli, db, site
from .datagen import CURRENT_SEASON
from .rollout import rollout


def create_app(test_config: Mapping[str, Any] | None = None, *, instance_path: str | None = None) -> Flask:
    """Build the app.

    ``test_config`` (tests, the demo) is used instead of the instance ``config.py``
    and ``FLASK_*`` environment variables; ``instance_path`` moves the instance folder.
    """
    app = Flask(__name__, instance_path=instance_path, instance_relative_config=True)
    app.config.from_mapping(
        NFL_DATABASE=os.path.join(app.instance_path, "nfl_betting.db"),
        NFL_SEASON=CURRENT_SEASON,
        # Share of v2 calls that fail on purpose (0–1), to rehearse fallback and rollback.
        V2_FAULT_RATE=0.0,
        # The runbook's "50–70 QBs per week" (`flask v2rollout verify`); the generated league lists
        # one passer per team and game plus relief and gadget snaps: 28–35 a week.
        NFL_QBS_PER_WEEK=(50, 70),
        # Thursday of week 1 of NFL_SEASON: what `import-game-log --week current` counts from.
        NFL_SEASON_START="2025-09-04",
        MAX_CONTENT_LENGTH=16 * 1024,
        # The runbook's starting point: nobody on v2, v2 computed in the shadow.
        V2ROLLOUT_DEFAULTS={"v2_rollout_percentage": 0, "v2_shadow_mode_enabled": True},
        V2ROLLOUT_LOG_FILE=os.path.join("logs", "v2_calculations.jsonl"),
        # The betting wording and data probes over the extension's packaged runbook.
        V2ROLLOUT_RUNBOOK_FILE=os.path.join(os.path.dirname(__file__), "runbook.yaml"),
    )
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
        app.config.from_prefixed_env()
    else:
        app.config.from_mapping(test_config)
    if not app.config.get("SECRET_KEY"):
        # Sessions keep anonymous users on one version. A per-process key is safe but
        # only sticky within one process: set FLASK_SECRET_KEY when running several.
        app.config["SECRET_KEY"] = secrets.token_hex(32)
    db.init_app(app)
    rollout.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(site.bp)
    cli.init_app(app)
    return app
