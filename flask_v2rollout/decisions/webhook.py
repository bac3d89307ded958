"""The alert webhook notifier: a JSON POST to the URL the host configured, with timeout and retries."""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

log = logging.getLogger("flask_v2rollout.alerts")


class Webhook:
    """Posts alert transitions; failures are logged, never raised into the evaluator.

    A :class:`~flask_v2rollout.decisions.notify.Notifier` that subscribes to every
    channel: it receives each transition whatever the rule's ``notify:`` list says.
    """

    name = "webhook"
    channels: frozenset[str] | None = None

    def __init__(self, url: str, *, timeout_s: float, retries: int) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.session = requests.Session()
        retry = Retry(total=retries, connect=retries, read=retries, status=retries, backoff_factor=0.2,
                      status_forcelist=(429, 500, 502, 503, 504), allowed_methods=frozenset({"POST"}))
        adapter = HTTPAdapter(max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.sent = 0
        self.failed = 0

    def send(self, payload: Mapping[str, Any]) -> bool:
        try:
            response = self.session.post(self.url, json=dict(payload), timeout=self.timeout_s)
            response.raise_for_status()
        except requests.RequestException as exc:
            self.failed += 1
            log.error("v2rollout: alert webhook failed: %s", exc)
            return False
        self.sent += 1
        return True
