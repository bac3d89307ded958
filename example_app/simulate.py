"""A traffic generator for the demo: many users asking for edges, some placing bets.

Stdlib HTTP only, paced to a request rate, always bounded (duration, count or a
stop event), and aimed at the loopback interface unless told otherwise, so a
typo in ``--url`` cannot load-test someone else's server. Deterministic for a
given seed, apart from what the server answers.
"""
from __future__ import annotations

import ipaddress
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .nfl import TEAMS

#: Chance that a user bets after seeing an edge, plus a little more per point of positive edge.
BASE_CONVERSION = 0.04
CONVERSION_PER_EDGE_POINT = 0.002


@dataclass
class SimulationReport:
    requests: int = 0
    conversions: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    fallbacks: int = 0

    def summary(self) -> str:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        versions = ", ".join(f"{k}: {v}" for k, v in sorted(self.versions.items())) or "none"
        return (
            f"{self.requests} edge requests ({statuses}); served {versions};"
            f" {self.fallbacks} fell back to v1; {self.conversions} conversions"
        )


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _post(
    url: str, user_id: str, body: dict[str, str] | None, timeout: float
) -> tuple[str, dict[str, Any] | None]:
    """POST and return (status, JSON body or None); network failures become status "error"."""
    data = json.dumps(body).encode() if body is not None else b""
    req = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/json", "X-User-Id": user_id,
    })
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return str(resp.status), json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        exc.close()
        return str(exc.code), None
    except (urllib.error.URLError, OSError):
        return "error", None


def simulate(
    base_url: str,
    players: Sequence[str],
    *,
    users: int = 5000,
    rps: float = 50.0,
    duration: float | None = None,
    count: int | None = None,
    stop: threading.Event | None = None,
    seed: int = 0,
    timeout: float = 5.0,
    allow_remote: bool = False,
) -> SimulationReport:
    """Send paced ``POST /api/edges`` (and some ``/api/convert``) until a bound is reached."""
    if duration is None and count is None and stop is None:
        raise ValueError("give a duration, a count or a stop event: the simulation must end")
    if not allow_remote and not is_loopback(base_url):
        raise ValueError(f"{base_url} is not a loopback address; pass allow_remote to target it")
    if not players or users < 1 or rps <= 0:
        raise ValueError("need at least one player, one user and a positive rate")
    rng = random.Random(seed)
    base = base_url.rstrip("/")
    report = SimulationReport()
    start = time.monotonic()
    while count is None or report.requests < count:
        due = start + report.requests / rps
        if duration is not None and due - start >= duration:
            break
        if stop is not None:
            if stop.wait(max(0.0, due - time.monotonic())):
                break
        else:
            time.sleep(max(0.0, due - time.monotonic()))
        user = f"user-{rng.randrange(users)}"
        body = {"player": rng.choice(players), "opponent": rng.choice(TEAMS)}
        status, answer = _post(f"{base}/api/edges", user, body, timeout)
        report.requests += 1
        report.statuses[status] += 1
        if answer is None:
            continue
        report.versions[answer["calculator_version"]] += 1
        report.fallbacks += bool(answer["metadata"]["fallback_to_v1"])
        chance = BASE_CONVERSION + CONVERSION_PER_EDGE_POINT * max(0.0, answer["edge"])
        if rng.random() < chance and _post(f"{base}/api/convert", user, None, timeout)[0] in ("200", "204"):
            report.conversions += 1
    return report
