"""The Slack notifier (channel ``slack``): one readable line per transition to an incoming webhook."""
from __future__ import annotations

import json
from collections.abc import Mapping
from functools import partial
from typing import Any

from .delivery import Deadline, check_status, deliver, post
from .notify import headline


class Slack:
    """Posts ``{"text": …}`` to a Slack incoming webhook; its URL is a secret and is never logged."""

    name = "slack"
    channels: frozenset[str] | None = frozenset({"slack"})

    def __init__(self, webhook_url: str, *, timeout_s: float, retries: int) -> None:
        self._url = webhook_url
        self.timeout_s = timeout_s
        self.retries = retries

    def send(self, payload: Mapping[str, Any]) -> bool:
        body = json.dumps({"text": headline(payload)}).encode()
        return deliver(self.name, partial(self._attempt, body), timeout_s=self.timeout_s, retries=self.retries)

    def _attempt(self, body: bytes, deadline: Deadline) -> None:
        check_status(post(self._url, body, {"Content-Type": "application/json"}, deadline))
