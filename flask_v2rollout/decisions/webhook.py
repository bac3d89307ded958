"""The alert webhook notifier: a JSON POST of every transition, signed with HMAC-SHA256 when a secret is set.

The signature covers ``<timestamp>.<body>``, so a receiver that checks the MAC and
rejects old timestamps also rejects replays (recipe in docs/operations.md).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from .delivery import Deadline, check_status, deliver, post

SIGNATURE_HEADER = "X-V2Rollout-Signature"
TIMESTAMP_HEADER = "X-V2Rollout-Timestamp"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of ``<timestamp>.<body>``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class Webhook:
    """Posts alert transitions; failures are logged and counted, never raised.

    A :class:`~flask_v2rollout.decisions.notify.Notifier` that subscribes to every
    channel: it receives each transition whatever the rule's ``notify:`` list says.
    """

    name = "webhook"
    channels: frozenset[str] | None = None

    def __init__(self, url: str, *, timeout_s: float, retries: int, secret: str | None = None,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.retries = retries
        self._secret = secret
        self._wall_clock = wall_clock

    def send(self, payload: Mapping[str, Any]) -> bool:
        body = json.dumps(dict(payload), default=str).encode()
        return deliver(self.name, partial(self._attempt, body), timeout_s=self.timeout_s, retries=self.retries)

    def _attempt(self, body: bytes, deadline: Deadline) -> None:
        headers = {"Content-Type": "application/json"}
        if self._secret:
            timestamp = str(int(self._wall_clock()))  # signed afresh for each attempt
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = signature(self._secret, timestamp, body)
        check_status(post(self.url, body, headers, deadline))
