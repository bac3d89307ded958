"""SQL tables of Flask-V2Rollout, all named ``v2rollout_*``.

They live in their own :data:`metadata` so the extension works with the host's
Flask-SQLAlchemy engine or with its own. A host that manages its schema with
Alembic adds this metadata to ``target_metadata``.
"""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Index,
)

metadata = MetaData()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


#: One row per rollout: its four flags as JSON and a version for optimistic concurrency.
flags_table = Table(
    "v2rollout_flags",
    metadata,
    Column("rollout", String(100), primary_key=True),
    Column("flags", Text, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("updated_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("updated_by", String(200), nullable=False, default="init"),
)

#: One row per changed flag, written in the same transaction as the change.
audit_table = Table(
    "v2rollout_audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout", String(100), nullable=False),
    Column("flag", String(100), nullable=False),
    Column("old_value", Text, nullable=True),
    Column("new_value", Text, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("reason", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Index("ix_v2rollout_audit_rollout_id", "rollout", "id"),
)
