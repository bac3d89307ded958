"""Deterministic assignment of a user to v1 or v2 (pure, no Flask).

The rule is the runbook's, extended to hundredths of a percent without moving
anyone: ``h = int(md5(key).hexdigest(), 16)`` where ``key`` is the user id (or
``salt + ":" + user_id`` with a salt); the coarse bucket ``h % 100`` is the
runbook's bucket and ``(h // 100) % 100`` orders users inside it. A user is in
v2 iff ``(h % 100) * 100 + (h // 100) % 100 < round(percentage * 100)``.

For an integer percentage this is exactly ``h % 100 < percentage``; for any
percentage it is a threshold on one fixed number per user, so raising the
percentage only ever moves users from v1 to v2.
"""
from __future__ import annotations

import hashlib

FINE_BUCKETS = 10_000  # hundredths of a percent


def _digest_int(user_id: str, salt: str) -> int:
    key = f"{salt}:{user_id}" if salt else user_id
    # the digest read as a big-endian integer: the same number as ``int(hexdigest, 16)``, without the text
    return int.from_bytes(hashlib.md5(key.encode("utf-8")).digest(), "big")


def bucket(user_id: str, salt: str = "") -> int:
    """The runbook's bucket, 0–99."""
    return _digest_int(user_id, salt) % 100


def fine_bucket(user_id: str, salt: str = "") -> int:
    """Position 0–9999 whose hundreds are the runbook's bucket."""
    h = _digest_int(user_id, salt)
    return (h % 100) * 100 + (h // 100) % 100


def threshold(percentage: float) -> int:
    """Percentage (0–100, at most 2 decimals) as a fine-bucket threshold."""
    return int(round(float(percentage) * 100))


def in_rollout(user_id: str, percentage: float, salt: str = "") -> bool:
    """True when ``user_id`` is served v2 at ``percentage``."""
    limit = threshold(percentage)
    if limit <= 0:
        return False
    if limit >= FINE_BUCKETS:
        return True
    return fine_bucket(user_id, salt) < limit


def assign(user_id: str, percentage: float, salt: str = "") -> str:
    """``"v2"`` or ``"v1"`` for ``user_id`` at ``percentage``."""
    return "v2" if in_rollout(user_id, percentage, salt) else "v1"
