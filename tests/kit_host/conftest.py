"""The host's fixtures: one app for the whole module, so a pin that leaked would show."""
from __future__ import annotations

import pytest
from host_app import create_app


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    return create_app(str(tmp_path_factory.mktemp("host")))
