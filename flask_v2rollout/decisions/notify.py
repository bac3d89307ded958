"""Notifications as a seam: a :class:`Notifier` protocol and a router keyed by each rule's ``notify:``.

A rule names its channels (the runbook's ``pagerduty``, ``slack``, ``email``); the
router hands each alert transition to the notifiers subscribed to one of them.
A notifier whose ``channels`` is ``None`` (the webhook) receives every transition.
Adding a transport is one class with ``name``, ``channels`` and ``send``.

Delivery never delays a decision: :meth:`Router.route` only queues (it never
blocks and never raises), and each notifier has its own bounded queue and
daemon thread, so a hung endpoint holds back its own deliveries and nobody
else's — not the evaluator's rollback, not another channel's page. Threads
start lazily in the process that routes, and again in a forked child (whose
parent's threads are gone).
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, TypedDict

log = logging.getLogger("flask_v2rollout.alerts")


class Notifier(Protocol):
    """One delivery transport."""

    #: shown in counters and logs
    name: str
    #: the ``notify:`` channels it serves; ``None``: all of them
    channels: frozenset[str] | None

    def send(self, payload: Mapping[str, Any]) -> bool:
        """Deliver one payload within the transport's deadline; False (never an exception) when it could not."""


class Counters(TypedDict):
    """What this process's notifiers did (``health()["notifications"]``)."""

    sent: dict[str, int]
    failed: dict[str, int]
    #: ``{notifier: {reason: count}}``; reasons: ``queue_full``
    dropped: dict[str, dict[str, int]]
    #: payloads queued or being delivered
    pending: int


class _Lane:
    """One notifier's queue; its thread delivers one payload at a time."""

    def __init__(self, notifier: Notifier, size: int) -> None:
        self.notifier = notifier
        self.queue: queue.Queue[Mapping[str, Any]] = queue.Queue(size)


class Router:
    """Routes a payload to the notifiers of the rule's channels, off the caller's thread; counts what each did."""

    def __init__(self, notifiers: Sequence[Notifier] = (), *, queue_size: int = 1000) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be ≥ 1")
        self.notifiers = tuple(notifiers)
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._start_lock = threading.Lock()
        self._pid: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._lanes = {id(n): _Lane(n, self.queue_size) for n in self.notifiers}
        self._unfinished = 0
        self._sent: dict[str, int] = {}
        self._failed: dict[str, int] = {}
        self._dropped: dict[str, dict[str, int]] = {}

    def targets(self, channels: Iterable[str]) -> list[Notifier]:
        wanted = set(channels)
        return [n for n in self.notifiers if n.channels is None or n.channels & wanted]

    def unrouted(self, channels: Iterable[str]) -> list[str]:
        """Channels no notifier serves (``verify`` reports them)."""
        served = set().union(*(n.channels or () for n in self.notifiers)) if self.notifiers else set()
        catch_all = any(n.channels is None for n in self.notifiers)
        return [] if catch_all else sorted(set(channels) - served)

    def route(self, payload: Mapping[str, Any], channels: Iterable[str]) -> int:
        """Queue ``payload`` for every target without waiting; returns how many queued it.

        A full queue drops the payload for that notifier and counts it.
        """
        try:
            targets = self.targets(channels)
            if targets:
                self._ensure_started()
        except Exception:  # e.g. no thread could be started: the decision goes on regardless
            log.exception("v2rollout: notifications could not be queued")
            return 0
        queued = 0
        for notifier in targets:
            with self._lock:
                self._unfinished += 1
            try:
                self._lanes[id(notifier)].queue.put_nowait(dict(payload))
            except queue.Full:
                log.error("v2rollout: alert %s dropped: its queue is full (%d)", notifier.name, self.queue_size)
                with self._lock:
                    reasons = self._dropped.setdefault(notifier.name, {})
                    reasons["queue_full"] = reasons.get("queue_full", 0) + 1
                    self._finished()
                continue
            queued += 1
        return queued

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every queued payload to be delivered or given up; True if none is left."""
        if self._pid != os.getpid():
            return True
        deadline = time.monotonic() + timeout
        with self._idle:
            return self._idle.wait_for(lambda: self._unfinished == 0, max(0.0, deadline - time.monotonic()))

    def counters(self) -> Counters:
        """A consistent copy of this process's counters."""
        with self._lock:
            return {"sent": dict(self._sent), "failed": dict(self._failed),
                    "dropped": {name: dict(reasons) for name, reasons in self._dropped.items()},
                    "pending": self._unfinished if self._pid == os.getpid() else 0}

    # -- delivery threads -----------------------------------------------------------
    def _ensure_started(self) -> None:
        if self._pid == os.getpid():
            return
        with self._start_lock:
            if self._pid == os.getpid():
                return
            if self._pid is not None:  # inherited across fork: the parent's queues, threads and locks are not ours
                self._lock = threading.Lock()
                self._idle = threading.Condition(self._lock)
                self._reset()
            for lane in self._lanes.values():
                threading.Thread(target=self._deliver, args=(lane,), name=f"v2rollout-notify-{lane.notifier.name}",
                                 daemon=True).start()
            self._pid = os.getpid()

    def _deliver(self, lane: _Lane) -> None:
        notifier = lane.notifier
        while True:
            payload = lane.queue.get()
            try:
                ok = notifier.send(payload)
            except Exception:
                log.exception("v2rollout: notifier %s raised", notifier.name)
                ok = False
            with self._lock:
                counter = self._sent if ok else self._failed
                counter[notifier.name] = counter.get(notifier.name, 0) + 1
                self._finished()

    def _finished(self) -> None:
        """One payload is done with (under ``self._lock``)."""
        self._unfinished -= 1
        self._idle.notify_all()


def headline(payload: Mapping[str, Any]) -> str:
    """One readable line of an alert payload: severity, rule, event, rollout, values, action."""
    event = str(payload.get("event", "alert")).removeprefix("alert_")
    line = f"[{payload.get('severity', '?')}] {payload.get('rule', '?')} {event}"
    if payload.get("rollout"):
        line += f" on {payload['rollout']}"
    values = payload.get("values") or {}
    if values:
        line += ": " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
    if payload.get("action"):
        line += f" — action: {payload['action']}"
    return line
