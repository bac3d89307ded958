"""Shared fixtures: real Flask apps on real SQLite files."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_v2rollout import V2Rollout
from helpers import build_app


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
