"""Four eyes on a large raise: above ``V2ROLLOUT_APPROVAL_ABOVE`` a change waits, in SQL, for a second approver.

A request records the changes and the flag version they were asked on; an approval by
a *different* person applies them compare-and-set on that version (so an approval never
lands on flags that moved since) before the TTL runs out. A rollback never waits and
cancels what is pending: nobody can approve a raise made obsolete by an emergency.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Engine, and_, insert, select, update

from .errors import ApprovalError
from .flags import AUTOPILOT, PERCENTAGE
from .models import approvals_table

PENDING, APPROVED, CANCELLED, EXPIRED, STALE = "pending", "approved", "cancelled", "expired", "stale"


class ApprovalStore:
    """Pending and decided approvals of one app."""

    def __init__(self, engine: Callable[[], Engine], *, ensure_tables: Callable[[], None], clock: Callable[[], float],
                 threshold: float | None, ttl_s: float) -> None:
        self._engine = engine
        self._ensure_tables = ensure_tables
        self._clock = clock
        self.threshold = threshold
        self.ttl_s = ttl_s

    def needed(self, current: Mapping[str, Any], changes: Mapping[str, Any]) -> bool:
        """True when ``changes`` raise the percentage above the threshold, or turn on the autopilot (which would)."""
        if self.threshold is None:
            return False
        if changes.get(AUTOPILOT) is True and not current[AUTOPILOT]:
            return True
        if PERCENTAGE not in changes:
            return False
        target = float(changes[PERCENTAGE])
        return target > self.threshold and target > float(current[PERCENTAGE])

    def request(self, rollout: str, changes: Mapping[str, Any], *, flag_version: int | None, actor: str,
                reason: str | None) -> dict[str, Any]:
        """Record a change waiting for approval; one at a time per rollout."""
        self._ensure_tables()
        now = self._clock()
        with self._engine().begin() as conn:
            self._expire(conn, rollout, now)
            waiting = conn.execute(select(approvals_table.c.id).where(self._pending(rollout))).scalar()
            if waiting is not None:
                raise ApprovalError(f"approval #{waiting} is already pending for {rollout}: approve it, "
                                    "or roll back to cancel it")
            key = conn.execute(insert(approvals_table).values(
                rollout=rollout, changes=json.dumps(dict(changes)), flag_version=flag_version,
                requested_by=actor, reason=reason, requested_at=now, expires_at=now + self.ttl_s,
                status=PENDING)).inserted_primary_key
        assert key is not None
        return self.get(rollout, int(key[0]))

    def get(self, rollout: str, approval_id: int) -> dict[str, Any]:
        self._ensure_tables()
        t = approvals_table
        with self._engine().connect() as conn:
            row = conn.execute(select(t).where(and_(t.c.id == approval_id, t.c.rollout == rollout))).mappings().first()
        if row is None:
            raise ApprovalError(f"no approval #{approval_id} for {rollout}", status=404)
        return _public(row, self._clock())

    def listing(self, rollout: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """The rollout's approvals, newest first (expired ones marked so)."""
        self._ensure_tables()
        t = approvals_table
        with self._engine().begin() as conn:
            self._expire(conn, rollout, self._clock())
            rows = conn.execute(select(t).where(t.c.rollout == rollout).order_by(t.c.id.desc()).limit(limit))
            return [_public(r, self._clock()) for r in rows.mappings()]

    def check_approver(self, rollout: str, approval_id: int, approver: str) -> dict[str, Any]:
        """The pending approval ``approver`` may give; ``ApprovalError`` says why not."""
        found = self.get(rollout, approval_id)
        if found["status"] == PENDING and found["expires_at"] <= self._clock():
            self._decide(rollout, approval_id, EXPIRED, None)
            found["status"] = EXPIRED
        if found["status"] != PENDING:
            raise ApprovalError(f"approval #{approval_id} is {found['status']}, not pending")
        if found["requested_by"] == approver:
            raise ApprovalError(f"approval #{approval_id} was requested by {approver}: another approver must give it",
                                status=403)
        return found

    def decide(self, rollout: str, approval_id: int, status: str, actor: str | None) -> bool:
        """Close a pending approval; False when someone else closed it first."""
        return self._decide(rollout, approval_id, status, actor)

    def void(self, rollout: str, approval_id: int) -> None:
        """An approval given but not applied (the flags had moved): marked stale."""
        self._ensure_tables()
        t = approvals_table
        with self._engine().begin() as conn:
            conn.execute(update(t).where(and_(t.c.id == approval_id, t.c.rollout == rollout)).values(status=STALE))

    def cancel_pending(self, rollout: str, actor: str) -> int:
        """Cancel whatever waits for ``rollout`` (a rollback happened); how many were cancelled."""
        self._ensure_tables()
        with self._engine().begin() as conn:
            result = conn.execute(update(approvals_table).where(self._pending(rollout))
                                  .values(status=CANCELLED, decided_by=actor[:200], decided_at=self._clock()))
        return int(result.rowcount)

    # -- internals ------------------------------------------------------------------------
    @staticmethod
    def _pending(rollout: str) -> Any:
        t = approvals_table
        return and_(t.c.rollout == rollout, t.c.status == PENDING)

    def _expire(self, conn: Any, rollout: str, now: float) -> None:
        conn.execute(update(approvals_table).where(and_(self._pending(rollout), approvals_table.c.expires_at <= now))
                     .values(status=EXPIRED, decided_at=now))

    def _decide(self, rollout: str, approval_id: int, status: str, actor: str | None) -> bool:
        self._ensure_tables()
        t = approvals_table
        with self._engine().begin() as conn:
            result = conn.execute(update(t).where(and_(t.c.id == approval_id, self._pending(rollout)))
                                  .values(status=status, decided_by=actor, decided_at=self._clock()))
        return bool(result.rowcount == 1)


def _public(row: Mapping[Any, Any], now: float) -> dict[str, Any]:
    return {
        "id": row["id"], "rollout": row["rollout"], "changes": json.loads(row["changes"]),
        "flag_version": row["flag_version"], "requested_by": row["requested_by"], "reason": row["reason"],
        "requested_at": row["requested_at"], "expires_at": row["expires_at"],
        "expires_in_s": max(0.0, row["expires_at"] - now) if row["status"] == PENDING else None,
        "status": row["status"], "decided_by": row["decided_by"], "decided_at": row["decided_at"],
    }
