"""Who signed in to the admin, who was refused, and which sign-ins are still valid — all in SQL.

The brute-force limits count refused credentials in ``v2rollout_auth_events``, so they
hold across every worker and host sharing the database; dashboard sessions live in
``v2rollout_admin_sessions`` so that sign-out, token rotation and the idle and absolute
lifetimes revoke them on the server, whatever a copied cookie says.
"""
from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, func, insert, select, update

from .models import admin_sessions_table, auth_events_table

MAX_ADDRESS = 64
MAX_ACTOR = 200
MAX_DETAIL = 200

#: what ``v2rollout_auth_events.event`` holds
SIGN_IN = "sign_in"
SIGN_OUT = "sign_out"
BEARER = "bearer"


@dataclass(frozen=True)
class Limits:
    """Refused credentials allowed per ``window_s``: from one address, and from everyone together."""

    window_s: float
    per_address: int
    overall: int


class AccessStore:
    """The admin's authentication state over SQL (one per app)."""

    def __init__(self, engine: Callable[[], Engine], *, ensure_tables: Callable[[], None], clock: Callable[[], float],
                 limits: Limits, idle_s: float, lifetime_s: float) -> None:
        self._engine = engine
        self._ensure_tables = ensure_tables
        self._clock = clock
        self.limits = limits
        self.idle_s = idle_s
        self.lifetime_s = lifetime_s

    # -- brute-force limits ------------------------------------------------------------
    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try a credential again; None when it may now."""
        self._ensure_tables()
        now, t = self._clock(), auth_events_table
        recent = and_(t.c.failed == 1, t.c.at > now - self.limits.window_s)
        waits = []
        with self._engine().connect() as conn:
            for where, limit in ((and_(recent, t.c.address == address[:MAX_ADDRESS]), self.limits.per_address),
                                 (recent, self.limits.overall)):
                count = int(conn.execute(select(func.count()).select_from(t).where(where)).scalar_one())
                if count >= limit:
                    # the failure whose expiry brings the count back under the limit
                    at = conn.execute(select(t.c.at).where(where).order_by(t.c.at).offset(count - limit)
                                      .limit(1)).scalar_one()
                    waits.append(at + self.limits.window_s - now)
        return max(1, math.ceil(max(waits))) if waits else None

    def record(self, event: str, *, failed: bool, address: str, actor: str | None = None,
               detail: str | None = None) -> None:
        """One audited authentication event (a refused one counts towards the limits)."""
        self._ensure_tables()
        with self._engine().begin() as conn:
            conn.execute(insert(auth_events_table).values(
                event=event, failed=int(failed), actor=None if actor is None else actor[:MAX_ACTOR],
                address=address[:MAX_ADDRESS], detail=None if detail is None else detail[:MAX_DETAIL],
                at=self._clock()))

    def events(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """Authentication events, newest first."""
        self._ensure_tables()
        t = auth_events_table
        with self._engine().connect() as conn:
            rows = conn.execute(select(t).order_by(t.c.id.desc()).limit(limit)).mappings().all()
        return [{"id": r["id"], "event": r["event"], "failed": bool(r["failed"]), "actor": r["actor"],
                 "address": r["address"], "detail": r["detail"], "at": r["at"]} for r in rows]

    # -- sessions --------------------------------------------------------------------------
    def open_session(self, *, actor: str, token_mark: str, address: str) -> str:
        """A new session; returns the random id for the cookie (only its hash is stored)."""
        self._ensure_tables()
        raw, now = secrets.token_urlsafe(32), self._clock()
        with self._engine().begin() as conn:
            conn.execute(insert(admin_sessions_table).values(
                id=_digest(raw), actor=actor[:MAX_ACTOR], token_mark=token_mark, address=address[:MAX_ADDRESS],
                created_at=now, last_seen=now))
        return raw

    def session_actor(self, raw: str, token_mark: str) -> str | None:
        """The actor of a live session (and its idle clock restarts); None when revoked, expired or rotated."""
        self._ensure_tables()
        t, now = admin_sessions_table, self._clock()
        with self._engine().begin() as conn:
            row = conn.execute(select(t).where(t.c.id == _digest(raw))).mappings().first()
            if row is None or row["revoked_at"] is not None:
                return None
            alive = (now - row["last_seen"] < self.idle_s and now - row["created_at"] < self.lifetime_s
                     and secrets.compare_digest(row["token_mark"], token_mark))
            conn.execute(update(t).where(t.c.id == row["id"])
                         .values(**({"last_seen": now} if alive else {"revoked_at": now})))
        return str(row["actor"]) if alive else None

    def revoke(self, raw: str) -> None:
        self._ensure_tables()
        t = admin_sessions_table
        with self._engine().begin() as conn:
            conn.execute(update(t).where(and_(t.c.id == _digest(raw), t.c.revoked_at.is_(None)))
                         .values(revoked_at=self._clock()))


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
