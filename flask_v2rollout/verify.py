"""The runbook's pre-deployment checklist as code: built-in checks plus the host's."""
from __future__ import annotations

import math
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flask import Flask
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from .flags import MONITORING, PERCENTAGE, SHADOW, FlagStore
from .jsonlog import JsonlLog
from .metrics.store import MetricStore
from .rules.conditions import AlertRuleError

Check = Callable[[], Any]
MIN_FREE_DISK = 0.10
MIN_TOKEN_BITS = 80


def token_bits(token: str) -> float:
    """A rough upper bound of a token's entropy: its length times the bits of the alphabets it draws on.

    Repeating a few characters earns nothing beyond what the distinct ones are worth.
    """
    alphabet = sum(size for test, size in ((str.islower, 26), (str.isupper, 26), (str.isdigit, 10))
                   if any(test(c) for c in token))
    alphabet += 33 if any(not (c.isascii() and c.isalnum()) for c in token) else 0
    return min(len(token), 4 * len(set(token))) * math.log2(max(alphabet, 2))


def _result(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"check": name, "status": "PASS" if ok else "FAIL", "detail": detail}


class Checklist:
    """The built-in checks over the parts they inspect, then the host's checks."""

    def __init__(
        self, *, app: Flask, rollouts: Callable[[], Iterable[str]], store: FlagStore, metric_store: MetricStore,
        rule_count: Callable[[], int], engine: Callable[[], Engine], jsonlog: JsonlLog | None,
        admin_token: str | None = None,
    ) -> None:
        self.app = app
        self.rollouts = rollouts
        self.store = store
        self.metric_store = metric_store
        self.rule_count = rule_count
        self.engine = engine
        self.jsonlog = jsonlog
        self.admin_token = admin_token

    def run(self, host_checks: Mapping[str, Check]) -> list[dict[str, Any]]:
        """Run every check; an exception in a check is its FAIL, never the command's crash."""
        names = sorted(self.rollouts())
        checks: list[tuple[str, Check]] = [
            ("flag_store", lambda: self._flag_store(names)),
            ("metrics_flush", self._metrics_flush),
            ("alert_rules", lambda: (True, f"{self.rule_count()} rules loaded")),
            ("database_file_mode", self._file_mode),
            ("free_disk", self._free_disk),
            ("log_directory_writable", self._log_dir),
            ("admin_token", self._admin_token),
        ]
        checks += [(f"starting_point[{name}]", lambda name=name: self._starting_point(name))  # type: ignore[misc]
                   for name in names]
        checks += list(host_checks.items())
        results = []
        with self.app.app_context():
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

    def _flag_store(self, names: list[str]) -> tuple[bool, str]:
        for name in names:
            self.store.read_fresh(name)
        return True, f"read flags of {len(names)} rollout(s)"

    def _metrics_flush(self) -> tuple[bool, str]:
        """A flush with nothing pending touches no SQL: the tables it writes are checked first, so it never passes
        unrun."""
        self.store.ensure_tables()
        pending = self.metric_store.backlog
        if not self.metric_store.flush():
            return False, self.metric_store.last_error or "flush failed"
        return True, f"flushed (tables present; {pending} batch(es) were waiting)"

    def _sqlite_file(self) -> str | None:
        url = self.engine().url
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return url.database
        return None

    def _file_mode(self) -> tuple[bool, str]:
        path = self._sqlite_file()
        if path is None:
            return True, f"not a SQLite file ({self.engine().url.get_backend_name()})"
        mode = stat.S_IMODE(os.stat(path).st_mode)
        return mode & 0o022 == 0, f"{path} mode {mode:o} (runbook: 644, not group/world-writable)"

    def _free_disk(self) -> tuple[bool, str]:
        path = self._sqlite_file() or self.app.instance_path
        directory = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else path
        usage = shutil.disk_usage(directory if os.path.exists(directory) else ".")
        free = usage.free / usage.total
        return free > MIN_FREE_DISK, f"{free:.1%} free on the database's disk (needs > {MIN_FREE_DISK:.0%})"

    def _log_dir(self) -> tuple[bool, str]:
        if self.jsonlog is None:
            return False, "V2ROLLOUT_LOG_FILE is not set: no structured calculation log"
        directory = os.path.dirname(os.path.abspath(self.jsonlog.path))
        return os.access(directory, os.W_OK), directory

    def _admin_token(self) -> tuple[bool, str]:
        """A token with whitespace around it (a secret file's newline) or little entropy is a FAIL."""
        token = self.admin_token
        if token is None:
            return True, "no V2ROLLOUT_ADMIN_TOKEN (the admin opens only through admin_required, if set)"
        if token != token.strip():
            return False, "V2ROLLOUT_ADMIN_TOKEN has surrounding whitespace (stripped): fix the secret's source"
        bits = token_bits(token)
        if bits < MIN_TOKEN_BITS:
            return False, (f"V2ROLLOUT_ADMIN_TOKEN is weak (about {bits:.0f} bits, needs {MIN_TOKEN_BITS}): "
                           "use secrets.token_urlsafe(32)")
        return True, f"{len(token)} characters, about {bits:.0f} bits"

    def _starting_point(self, name: str) -> tuple[bool, str]:
        """Before any user is on v2 the checklist wants shadow and monitoring on; after, monitoring on."""
        flags = self.store.read_fresh(name).values
        text = (f"{flags[PERCENTAGE]:g}% v2, shadow {'on' if flags[SHADOW] else 'off'}, "
                f"monitoring {'on' if flags[MONITORING] else 'off'}")
        if flags[PERCENTAGE] > 0:
            return bool(flags[MONITORING]), f"{text}: rollout under way (monitoring must stay on)"
        return bool(flags[SHADOW] and flags[MONITORING]), f"{text} (checklist: 0 %, shadow on, monitoring on)"
