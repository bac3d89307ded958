"""Failures of the extension's own SQL work: counted, remembered, logged at most once per interval.

A database outage must be visible without flooding the log from every request.
"""
from __future__ import annotations

import logging
import time


class FailureLog:
    """Counts failures of one component and logs the first of each interval."""

    def __init__(self, logger: logging.Logger, what: str, *, interval_s: float) -> None:
        self._logger = logger
        self._what = what
        self._interval_s = interval_s
        self._last_logged = float("-inf")
        self.count = 0
        self.last_error: str | None = None

    def record(self, exc: BaseException, detail: str = "") -> None:
        self.count += 1
        self.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        now = time.monotonic()
        if now - self._last_logged >= self._interval_s:
            self._last_logged = now
            self._logger.error("v2rollout: %s (%s); %s%d failure(s) so far", self._what, self.last_error,
                               f"{detail}; " if detail else "", self.count)
