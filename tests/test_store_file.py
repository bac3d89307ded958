"""A SQLite store file deleted or replaced under a running app: unhealthy, writes refused, never recreated."""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy.exc import OperationalError

from flask_v2rollout import StoreFileError, V2Rollout
from flask_v2rollout.cli import cli
from flask_v2rollout.flags import FlagStore

WAIT_S = 10.0
MakeApp = Callable[..., tuple[Flask, V2Rollout]]


def serving(tmp_path: Path, ext: V2Rollout, make_app: MakeApp) -> tuple[Flask, Path]:
    db = tmp_path / "store.db"
    app, _ = make_app(ext, V2ROLLOUT_DATABASE_URI=f"sqlite:///{db}", V2ROLLOUT_FLAG_TTL_S=0.05,
                      V2ROLLOUT_ADMIN_TOKEN="t0ken-of-sixteen-chars")
    with app.app_context():
        ext.set_flag("calc", "v2_rollout_percentage", 100, actor="ops")
    return app, db


def refreshed(app: Flask, ext: V2Rollout) -> FlagStore:
    """Read after the TTL and wait for the refresh that read started."""
    store: FlagStore = app.extensions["v2rollout"].store
    deadline = time.monotonic() + WAIT_S
    started = store.refreshes
    while store.refreshes == started and time.monotonic() < deadline:
        with app.app_context():
            ext.flags("calc")
    assert store.wait_idle(WAIT_S)
    return store


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_lost_file_is_unhealthy_keeps_flags_and_refuses_writes(tmp_path: Path, ext: V2Rollout, make_app: MakeApp,
                                                              how: str) -> None:
    app, db = serving(tmp_path, ext, make_app)
    if how == "deleted":
        db.unlink()
    else:  # a restore from a copy: same path, another file
        shutil.copyfile(db, tmp_path / "copy.db")
        os.replace(tmp_path / "copy.db", db)
    store = refreshed(app, ext)
    with app.app_context():
        health = ext.health()["flag_store"]
        assert health["healthy"] is False
        assert f"{db} was {how}" in health["last_error"]
        assert store.failures >= 1
        assert ext.flags("calc")["v2_rollout_percentage"] == 100.0  # last-known
        assert ext.calculate("calc", 1, user_id="u1").version == "v2"
        with pytest.raises(StoreFileError, match=f"was {how}"):
            ext.rollback("calc", target=0, actor="ops")
        with pytest.raises(StoreFileError):
            ext.set_flag("calc", "v2_rollout_percentage", 0, actor="ops")
        result = app.test_cli_runner().invoke(cli, ["rollback", "--target", "0"])
        api = app.test_client().post("/v2rollout/api/rollouts/calc/rollback", json={"target": 0},
                                     headers={"Authorization": "Bearer t0ken-of-sixteen-chars"})
    assert (api.status_code, api.get_json()["error"]["code"]) == (503, "store_unavailable")
    assert result.exit_code == 1
    assert f"{db} was {how}" in result.output
    assert db.exists() is (how == "replaced")


def test_the_own_engine_never_creates_the_file_again(tmp_path: Path, ext: V2Rollout, make_app: MakeApp) -> None:
    app, db = serving(tmp_path, ext, make_app)
    engine = app.extensions["v2rollout"].engine()
    db.unlink()
    engine.dispose()  # the next connection is a new one
    with pytest.raises(OperationalError, match="unable to open"):
        engine.connect()
    assert not db.exists()


def test_cli_refuses_a_store_that_does_not_exist(tmp_path: Path, ext: V2Rollout, make_app: MakeApp) -> None:
    db = tmp_path / "store.db"
    app, _ = make_app(ext, V2ROLLOUT_DATABASE_URI=f"sqlite:///{db}")
    for args in (["rollback", "--target", "0"], ["status"]):
        result = app.test_cli_runner().invoke(cli, args)
        assert result.exit_code == 1, result.output
        assert f"{db} does not exist" in result.output
    assert not db.exists()
    served = V2Rollout()
    served.register("calc", v1=abs, v2=abs)
    app, _ = make_app(served, instance="served", V2ROLLOUT_DATABASE_URI=f"sqlite:///{db}")
    with app.app_context():  # the app (another process in production) creates it on first use
        assert served.flags("calc")["v2_rollout_percentage"] == 0.0
    assert db.exists()
    assert app.test_cli_runner().invoke(cli, ["rollback", "--target", "0"]).exit_code == 0


def test_moved_back_file_is_healthy_again(tmp_path: Path, ext: V2Rollout, make_app: MakeApp) -> None:
    app, db = serving(tmp_path, ext, make_app)
    db.rename(tmp_path / "aside.db")
    assert refreshed(app, ext).healthy is False
    with app.app_context():
        for i in range(5):  # counted while the file is away: kept, never dropped as refused rows
            ext.calculate("calc", i, user_id=f"u{i}")
        assert ext.flush() is False
    (tmp_path / "aside.db").rename(db)
    assert refreshed(app, ext).healthy is True
    with app.app_context():
        assert ext.flush()
        assert ext.health()["metrics"]["quarantined"] == 0
        window = ext.metrics("calc")
        assert window["arms"]["v1"]["calculations"] + window["arms"]["v2"]["calculations"] >= 5
        ext.rollback("calc", target=0, actor="ops")
        assert ext.flags("calc", fresh=True)["v2_rollout_percentage"] == 0.0
