"""The PagerDuty notifier (channel ``pagerduty``): Events API v2, trigger on fired and resolve on resolved.

The ``dedup_key`` is ``<rollout>/<rule>``, so a resolve closes the incident its
trigger opened and a rule that fires again while open adds to it.
"""
from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from functools import partial
from typing import Any

from .delivery import Deadline, check_status, deliver, post
from .notify import headline

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
#: the runbook's severities (SEV-1 … SEV-4) in PagerDuty's words
SEVERITIES = {"CRITICAL": "critical", "HIGH": "error", "MEDIUM": "warning", "LOW": "info"}
SUMMARY_LIMIT = 1024  # PagerDuty truncates longer summaries


class PagerDuty:
    """Sends alert transitions as PagerDuty events."""

    name = "pagerduty"
    channels: frozenset[str] | None = frozenset({"pagerduty"})

    def __init__(self, routing_key: str, *, url: str = EVENTS_URL, timeout_s: float, retries: int,
                 source: str | None = None) -> None:
        self.url = url
        self._routing_key = routing_key
        self.timeout_s = timeout_s
        self.retries = retries
        self.source = source or socket.gethostname()

    def event(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The Events API v2 body for one payload."""
        rule = str(payload.get("rule", "?"))
        dedup_key = f"{payload.get('rollout', '-')}/{rule}"
        if payload.get("event") == "alert_resolved":
            return {"routing_key": self._routing_key, "event_action": "resolve", "dedup_key": dedup_key}
        details = {k: payload[k] for k in ("values", "description", "action", "notify", "at") if k in payload}
        return {
            "routing_key": self._routing_key, "event_action": "trigger", "dedup_key": dedup_key,
            "payload": {"summary": headline(payload)[:SUMMARY_LIMIT],
                        "severity": SEVERITIES.get(str(payload.get("severity")), "error"),
                        "source": self.source, "component": str(payload.get("rollout", "-")), "class": rule,
                        "group": "flask-v2rollout", "custom_details": details},
        }

    def send(self, payload: Mapping[str, Any]) -> bool:
        body = json.dumps(self.event(payload), default=str).encode()
        return deliver(self.name, partial(self._attempt, body), timeout_s=self.timeout_s, retries=self.retries)

    def _attempt(self, body: bytes, deadline: Deadline) -> None:
        check_status(post(self.url, body, {"Content-Type": "application/json"}, deadline))
