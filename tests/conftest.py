"""Shared fixtures: real Flask apps on real SQLite files (and PostgreSQL in e2e)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest
from flask import Flask, jsonify

from flask_v2rollout import V2Rollout


def build_app(instance: Path, ext: V2Rollout | None = None, **config: Any) -> tuple[Flask, V2Rollout]:
    """A small host app with one route that calls ``calculate()``."""
    app = Flask("host", instance_path=str(instance))
    app.config.update({"SECRET_KEY": "test-secret", "TESTING": True, **config})
    ext = ext or V2Rollout()
    ext.init_app(app)

    @app.get("/calc/<int:x>")
    def calc(x: int):
        outcome = ext.calculate("calc", x)
        return jsonify(value=outcome.value, version=outcome.version, assigned=outcome.assigned,
                       fallback_reason=outcome.fallback_reason)

    @app.get("/flags")
    def flags():
        return jsonify(ext.flags("calc"))

    return app, ext


@pytest.fixture
def ext() -> V2Rollout:
    ext = V2Rollout()
    ext.register("calc", v1=lambda x: x, v2=lambda x: x * 10)
    return ext


@pytest.fixture
def app(tmp_path: Path, ext: V2Rollout) -> Flask:
    app, _ = build_app(tmp_path / "instance", ext)
    return app


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., tuple[Flask, V2Rollout]]:
    def factory(ext: V2Rollout | None = None, instance: str = "instance", **config: Any):
        return build_app(tmp_path / instance, ext, **config)

    return factory


def ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, reason: str) -> None:
    """Skip locally when a component is missing; fail in CI, where it must be there."""
    if condition:
        return
    if ci():
        pytest.fail(f"required component missing in CI: {reason}")
    pytest.skip(reason)
