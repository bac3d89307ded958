"""Notifications as a seam: a :class:`Notifier` protocol and a router keyed by each rule's ``notify:``.

A rule names its channels (the runbook's ``pagerduty``, ``slack``, ``email``); the
router hands each alert transition to the notifiers subscribed to one of them.
A notifier whose ``channels`` is ``None`` (the webhook) receives every transition.
Adding a transport is one class with ``name``, ``channels`` and ``send``.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("flask_v2rollout.alerts")


class Notifier(Protocol):
    """One delivery transport."""

    #: shown in counters and logs
    name: str
    #: the ``notify:`` channels it serves; ``None``: all of them
    channels: frozenset[str] | None

    def send(self, payload: Mapping[str, Any]) -> bool:
        """Deliver one payload; False (never an exception) when it could not."""


@dataclass
class Router:
    """Routes a payload to the notifiers of the rule's channels; counts what each did."""

    notifiers: Sequence[Notifier] = ()
    sent: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)

    def targets(self, channels: Iterable[str]) -> list[Notifier]:
        wanted = set(channels)
        return [n for n in self.notifiers if n.channels is None or n.channels & wanted]

    def unrouted(self, channels: Iterable[str]) -> list[str]:
        """Channels no notifier serves (``verify`` reports them)."""
        served = set().union(*(n.channels or () for n in self.notifiers)) if self.notifiers else set()
        catch_all = any(n.channels is None for n in self.notifiers)
        return [] if catch_all else sorted(set(channels) - served)

    def route(self, payload: Mapping[str, Any], channels: Iterable[str]) -> int:
        """Send ``payload`` to every target; returns how many delivered."""
        delivered = 0
        for notifier in self.targets(channels):
            try:
                ok = notifier.send(payload)
            except Exception:
                log.exception("v2rollout: notifier %s raised", notifier.name)
                ok = False
            counter = self.sent if ok else self.failed
            counter[notifier.name] = counter.get(notifier.name, 0) + 1
            delivered += ok
        return delivered
