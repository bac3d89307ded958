"""The runbook's pre-deployment checklist as code: built-in checks plus the host's."""
from __future__ import annotations

import os
import shutil
import stat
from typing import TYPE_CHECKING, Any, Callable, Mapping

from sqlalchemy.exc import SQLAlchemyError

from .rules.conditions import AlertRuleError
from .flags import MONITORING, PERCENTAGE, SHADOW

if TYPE_CHECKING:
    from .extension import _State

Check = Callable[[], Any]
MIN_FREE_DISK = 0.10


def _result(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"check": name, "status": "PASS" if ok else "FAIL", "detail": detail}


def run_checks(state: "_State", host_checks: Mapping[str, Check]) -> list[dict[str, Any]]:
    """Run every check; an exception in a check is its FAIL, never the command's crash."""
    checks: list[tuple[str, Check]] = [
        ("flag_store", lambda: _flag_store(state)),
        ("metrics_flush", lambda: (state.metric_store.flush(), state.metric_store.last_error or "flushed")),
        ("alert_rules", lambda: (True, f"{len(state.evaluator.rules)} rules loaded")),
        ("database_file_mode", lambda: _file_mode(state)),
        ("free_disk", lambda: _free_disk(state)),
        ("log_directory_writable", lambda: _log_dir(state)),
    ]
    checks += [(f"starting_point[{name}]", lambda name=name: _starting_point(state, name))
               for name in sorted(state.ext.rollouts)]
    checks += list(host_checks.items())
    results = []
    with state.app.app_context():
        for name, check in checks:
            try:
                outcome = check()
            except (SQLAlchemyError, AlertRuleError, OSError, RuntimeError, ValueError) as exc:
                lines = [line.strip() for line in f"{type(exc).__name__}: {exc}".splitlines() if line.strip()]
                results.append(_result(name, False, " | ".join(lines[:6])))
                continue
            ok, detail = outcome if isinstance(outcome, tuple) else (bool(outcome), "")
            results.append(_result(name, bool(ok), str(detail)))
    return results


def _flag_store(state: "_State") -> tuple[bool, str]:
    for name in state.ext.rollouts:
        state.store.read_fresh(name)
    return True, f"read flags of {len(state.ext.rollouts)} rollout(s)"


def _sqlite_file(state: "_State") -> str | None:
    url = state.engine().url
    return url.database if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") else None


def _file_mode(state: "_State") -> tuple[bool, str]:
    path = _sqlite_file(state)
    if path is None:
        return True, f"not a SQLite file ({state.engine().url.get_backend_name()})"
    mode = stat.S_IMODE(os.stat(path).st_mode)
    return mode & 0o022 == 0, f"{path} mode {mode:o} (runbook: 644, not group/world-writable)"


def _free_disk(state: "_State") -> tuple[bool, str]:
    path = _sqlite_file(state) or state.app.instance_path
    directory = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else path
    usage = shutil.disk_usage(directory if os.path.exists(directory) else ".")
    free = usage.free / usage.total
    return free > MIN_FREE_DISK, f"{free:.1%} free on the database's disk (needs > {MIN_FREE_DISK:.0%})"


def _log_dir(state: "_State") -> tuple[bool, str]:
    if state.jsonlog is None:
        return False, "V2ROLLOUT_LOG_FILE is not set: no structured calculation log"
    directory = os.path.dirname(os.path.abspath(state.jsonlog.path))
    return os.access(directory, os.W_OK), directory


def _starting_point(state: "_State", name: str) -> tuple[bool, str]:
    """Before any user is on v2 the checklist wants shadow and monitoring on; after, monitoring on."""
    flags = state.store.read_fresh(name).values
    text = (f"{flags[PERCENTAGE]:g}% v2, shadow {'on' if flags[SHADOW] else 'off'}, "
            f"monitoring {'on' if flags[MONITORING] else 'off'}")
    if flags[PERCENTAGE] > 0:
        return bool(flags[MONITORING]), f"{text}: rollout under way (monitoring must stay on)"
    return bool(flags[SHADOW] and flags[MONITORING]), f"{text} (checklist: 0 %, shadow on, monitoring on)"
