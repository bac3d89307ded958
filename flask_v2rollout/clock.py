"""The wall clock of one app's metrics, windows, gates and autopilot.

Every part that reads the time is handed the same :class:`Clock`, so the
testing kit can drive them all at once (``v2rollout_clock``).
"""
from __future__ import annotations

import time
from collections.abc import Callable


class Clock:
    """Epoch seconds from ``source`` (``time.time`` unless a test replaces it)."""

    __slots__ = ("source",)

    def __init__(self, source: Callable[[], float] = time.time) -> None:
        self.source = source

    def __call__(self) -> float:
        return self.source()
