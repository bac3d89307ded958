"""The alert webhook: a JSON POST to the URL the host configured, with timeout and retries."""
from __future__ import annotations

import logging
from typing import Any, Mapping

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

log = logging.getLogger("flask_v2rollout.alerts")


class Webhook:
    """Posts alert transitions; failures are logged, never raised into the evaluator."""

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

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Webhook | None":
        url = cfg["V2ROLLOUT_WEBHOOK_URL"]
        if not url:
            return None
        return cls(str(url), timeout_s=float(cfg["V2ROLLOUT_WEBHOOK_TIMEOUT_S"]),
                   retries=int(cfg["V2ROLLOUT_WEBHOOK_RETRIES"]))

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
