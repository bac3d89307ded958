"""Calls that have not returned yet, so a hanging calculation shows up in metrics before it ends.

The request path registers each call on entry and removes it on return; the
flusher sweeps before every flush and counts each call older than the slow
threshold once, as a slow calculation (``hung``). When such a call finally
returns, its outcome is counted without counting the call again. A call that
never returns (the server kills the worker) has been counted by then.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable

#: (rollout, arm, started)
_Call = tuple[str, str, float]


class InFlight:
    """The calls of one app in this process that are still running.

    Lock-free on the request path: a call is one dict entry, and whoever removes it from ``_calls`` first
    owns it (``dict.pop`` is atomic) — :meth:`finish` (the call returned in time) or :meth:`sweep` (it is
    hung: counted, and parked in ``_hung`` until it returns).
    """

    def __init__(self, *, slow_s: float, on_hung: Callable[[str, str], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slow_s = slow_s
        self._on_hung = on_hung
        self._clock = clock
        self._calls: dict[int, _Call] = {}
        self._hung: dict[int, _Call] = {}
        self._ids = itertools.count()

    def start(self, rollout: str, arm: str) -> int:
        token = next(self._ids)
        self._calls[token] = (rollout, arm, self._clock())
        return token

    def finish(self, token: int) -> bool:
        """Forget the call; True when the sweep already counted it."""
        if self._calls.pop(token, None) is not None:
            return False
        # the sweep took it: it parked it in _hung before taking it from _calls
        return self._hung.pop(token, None) is not None

    def sweep(self) -> int:
        """Count every call running longer than the slow threshold (once each); returns how many."""
        cutoff = self._clock() - self.slow_s
        hung = 0
        for token, call in list(self._calls.items()):
            if call[2] > cutoff:
                continue
            self._hung[token] = call  # first, so a finish() that finds _calls empty finds it here
            if self._calls.pop(token, None) is None:  # returned meanwhile: not hung after all
                self._hung.pop(token, None)
                continue
            hung += 1
            self._on_hung(call[0], call[1])
        return hung

    def reset(self) -> None:
        """After a fork: the parent's calls are not running here."""
        self._calls = {}
        self._hung = {}

    @property
    def running(self) -> int:
        return len(self._calls) + len(self._hung)
