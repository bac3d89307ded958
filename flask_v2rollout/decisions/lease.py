"""A short lease in SQL: at most one holder at a time across processes and hosts.

``acquire`` is a single conditional UPDATE (or an INSERT for a new lease), so
two racing processes cannot both win: the database decides.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable

from sqlalchemy import Engine, insert, or_, update
from sqlalchemy.exc import IntegrityError

from ..models import leases_table

_HOLDERS: dict[int, str] = {}


def holder_id() -> str:
    """This process as a lease holder (a forked child gets its own id)."""
    pid = os.getpid()
    if pid not in _HOLDERS:
        _HOLDERS[pid] = f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}"
    return _HOLDERS[pid]


def acquire(engine: Engine, name: str, ttl_s: float, *, holder: str | None = None,
            clock: Callable[[], float] = time.time) -> bool:
    """Take or renew lease ``name`` for ``ttl_s`` seconds; True if this holder has it now."""
    me = holder or holder_id()
    now = clock()
    t = leases_table.c
    with engine.begin() as conn:
        taken = conn.execute(
            update(leases_table)
            .where(t.name == name, or_(t.expires_at < now, t.holder == me))
            .values(holder=me, expires_at=now + ttl_s)
        ).rowcount
    if taken == 1:
        return True
    try:
        with engine.begin() as conn:
            conn.execute(insert(leases_table).values(name=name, holder=me, expires_at=now + ttl_s))
    except IntegrityError:
        return False
    return True


def release(engine: Engine, name: str, *, holder: str | None = None) -> None:
    """Give the lease up early (only if this holder has it)."""
    t = leases_table.c
    with engine.begin() as conn:
        mine = t.holder == (holder or holder_id())
        conn.execute(update(leases_table).where(t.name == name, mine).values(expires_at=0.0))
