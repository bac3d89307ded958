"""Calls that have not returned yet, so a hanging calculation shows up in metrics before it ends.

The request path registers each call on entry and removes it on return; the
flusher sweeps before every flush and counts each call older than the slow
threshold once, as a slow calculation (``hung``). When such a call finally
returns, its outcome is counted without counting the call again. A call that
never returns (the server kills the worker) has been counted by then.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Call:
    rollout: str
    arm: str
    started: float
    counted: bool = False


class InFlight:
    """The calls of one app in this process that are still running."""

    def __init__(self, *, slow_s: float, on_hung: Callable[[str, str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slow_s = slow_s
        self._on_hung = on_hung
        self._clock = clock
        self._calls: dict[int, _Call] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def start(self, rollout: str, arm: str) -> int:
        token = next(self._ids)
        call = _Call(rollout, arm, self._clock())
        with self._lock:
            self._calls[token] = call
        return token

    def finish(self, token: int) -> bool:
        """Forget the call; True when the sweep already counted it."""
        with self._lock:
            call = self._calls.pop(token, None)
        return call is not None and call.counted

    def sweep(self) -> int:
        """Count every call running longer than the slow threshold (once each); returns how many."""
        cutoff = self._clock() - self.slow_s
        with self._lock:
            hung = [c for c in self._calls.values() if not c.counted and c.started <= cutoff]
            for call in hung:
                call.counted = True
        for call in hung:
            self._on_hung(call.rollout, call.arm)
        return len(hung)

    def reset(self) -> None:
        """After a fork: the parent's calls are not running here."""
        with self._lock:
            self._calls = {}

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._calls)
