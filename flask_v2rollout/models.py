"""SQL tables of Flask-V2Rollout, all named ``v2rollout_*``.

They live in their own :data:`metadata` so the extension works with the host's
Flask-SQLAlchemy engine or with its own. A host that manages its schema with
Alembic adds this metadata to ``target_metadata``.
"""
from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
)

metadata = MetaData()


def utcnow() -> datetime:
    return datetime.now(UTC)


#: One row per rollout: its four flags as JSON and a version for optimistic concurrency.
flags_table = Table(
    "v2rollout_flags",
    metadata,
    Column("rollout", String(100), primary_key=True),
    Column("flags", Text, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
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


#: Additive metric counters merged from every process: one row per
#: (rollout, minute, arm, metric, key, shard); flushes add to ``value``. Writers add to
#: shards 1 and up (on PostgreSQL the first one no other flush holds, so concurrent
#: flushes never wait on each other's rows); the compaction folds closed minutes into
#: shard 0 and into :data:`hour_counters_table`. A read sums the shards.
counters_table = Table(
    "v2rollout_minute_counters",
    metadata,
    Column("rollout", String(100), nullable=False),
    Column("minute", BigInteger, nullable=False),
    Column("arm", String(10), nullable=False),
    Column("metric", String(40), nullable=False),
    Column("key", String(200), nullable=False),
    Column("shard", SmallInteger, nullable=False),
    Column("value", Float, nullable=False),
    PrimaryKeyConstraint("rollout", "minute", "arm", "metric", "key", "shard", name="pk_v2rollout_minute_counters"),
    Index("ix_v2rollout_minute_counters_minute", "minute"),
)
#: rows not yet compacted, found without reading the compacted ones
Index("ix_v2rollout_minute_counters_pending", counters_table.c.minute,
      postgresql_where=counters_table.c.shard > 0, sqlite_where=counters_table.c.shard > 0)

#: Hourly sums of the compacted minute rows: a window reads whole hours here and its
#: partial first and last hours from :data:`counters_table`.
hour_counters_table = Table(
    "v2rollout_hour_counters",
    metadata,
    Column("rollout", String(100), nullable=False),
    Column("hour", BigInteger, nullable=False),
    Column("arm", String(10), nullable=False),
    Column("metric", String(40), nullable=False),
    Column("key", String(200), nullable=False),
    Column("value", Float, nullable=False),
    PrimaryKeyConstraint("rollout", "hour", "arm", "metric", "key", name="pk_v2rollout_hour_counters"),
)

#: One row per applied flush batch: a retried batch that was in fact applied is skipped.
flushes_table = Table(
    "v2rollout_flushes",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("flushed_at", BigInteger, nullable=False, index=True),
)

#: Users seen per arm since the rollout's last percentage change, and whether they converted:
#: consulted only at flush, to count a user once as new (and once as converted) in the
#: per-minute counters. Deleted at each percentage change and after the retention
#: (``last_seen`` is written once, at the first exposure, so it dates the row).
exposures_table = Table(
    "v2rollout_exposures",
    metadata,
    Column("rollout", String(100), nullable=False),
    Column("arm", String(10), nullable=False),
    Column("user_key", String(200), nullable=False),
    Column("first_seen", BigInteger, nullable=False),
    Column("last_seen", BigInteger, nullable=False, index=True),
    Column("converted_at", BigInteger, nullable=True),
    PrimaryKeyConstraint("rollout", "arm", "user_key", name="pk_v2rollout_exposures"),
)

#: How many times each rollout's exposure rows were deleted (``""``: by the retention prune), bumped in the
#: deleting transaction, so a process's memory of the rows it wrote is trusted only while the count holds.
exposure_resets_table = Table(
    "v2rollout_exposure_resets",
    metadata,
    Column("rollout", String(100), primary_key=True),
    Column("resets", BigInteger, nullable=False),
)

#: Host data-quality probes sampled by the flusher (last value per minute wins).
probes_table = Table(
    "v2rollout_probes",
    metadata,
    Column("name", String(100), nullable=False),
    Column("minute", BigInteger, nullable=False),
    Column("value", Float, nullable=True),
    PrimaryKeyConstraint("name", "minute", name="pk_v2rollout_probes"),
)

#: Short leases so exactly one process at a time does a shared job (alert evaluation).
leases_table = Table(
    "v2rollout_leases",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", Float, nullable=False),
)

#: Current state of each alert rule per rollout (pending → firing → resolved).
alert_state_table = Table(
    "v2rollout_alert_state",
    metadata,
    Column("rollout", String(100), nullable=False),
    Column("rule", String(100), nullable=False),
    Column("status", String(20), nullable=False),
    Column("data", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    PrimaryKeyConstraint("rollout", "rule", name="pk_v2rollout_alert_state"),
)

#: Every alert transition (fired, resolved), kept as history.
alert_events_table = Table(
    "v2rollout_alert_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout", String(100), nullable=False),
    Column("rule", String(100), nullable=False),
    Column("severity", String(20), nullable=False),
    Column("event", String(20), nullable=False),
    Column("value", Float, nullable=True),
    Column("detail", Text, nullable=True),
    Column("at", Float, nullable=False),
    Index("ix_v2rollout_alert_events_rollout_id", "rollout", "id"),
)

#: Manual gate checks recorded by people (latest per check counts).
checks_table = Table(
    "v2rollout_checks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout", String(100), nullable=False),
    Column("check", String(100), nullable=False),
    Column("passed", Integer, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("note", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Index("ix_v2rollout_checks_rollout_check", "rollout", "check", "id"),
)

#: Every sign-in, sign-out and refused credential of the admin surface; the refused ones
#: within the window are what the brute-force limits count, in every worker and host.
auth_events_table = Table(
    "v2rollout_auth_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event", String(20), nullable=False),
    Column("failed", Integer, nullable=False),
    Column("actor", String(200), nullable=True),
    Column("address", String(64), nullable=False),
    Column("detail", String(200), nullable=True),
    Column("at", Float, nullable=False),
    Index("ix_v2rollout_auth_events_failed_at", "failed", "at"),
    Index("ix_v2rollout_auth_events_address_at", "address", "at"),
)

#: One row per dashboard sign-in: the cookie carries only a random id whose hash is the key,
#: so sign-out, token rotation and the lifetimes revoke it server-side.
admin_sessions_table = Table(
    "v2rollout_admin_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("actor", String(200), nullable=False),
    Column("token_mark", String(64), nullable=False),
    Column("address", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

#: Changes waiting for a second person (four eyes): requested, then approved, expired or cancelled.
approvals_table = Table(
    "v2rollout_approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout", String(100), nullable=False),
    Column("changes", Text, nullable=False),
    Column("flag_version", Integer, nullable=True),
    Column("requested_by", String(200), nullable=False),
    Column("reason", Text, nullable=True),
    Column("requested_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("status", String(20), nullable=False),
    Column("decided_by", String(200), nullable=True),
    Column("decided_at", Float, nullable=True),
    Index("ix_v2rollout_approvals_rollout_status", "rollout", "status"),
)

#: Shadow comparisons, one row each (``flask v2rollout compare``): bounded by age and by rows per rollout.
shadow_comparisons_table = Table(
    "v2rollout_shadow_comparisons",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout", String(100), nullable=False),
    Column("at", Float, nullable=False),
    Column("subject", String(200), nullable=True),
    Column("request_id", String(128), nullable=True),
    Column("shadow_version", String(10), nullable=False),
    Column("v1_value", Float, nullable=True),
    Column("v2_value", Float, nullable=True),
    Column("difference", Float, nullable=True),
    Column("agreement", String(100), nullable=False),
    Index("ix_v2rollout_shadow_comparisons_rollout_at", "rollout", "at"),
)

#: Calculator inputs of rollouts that opted in (``record_inputs=True``), redacted, for ``flask v2rollout replay``.
recorded_inputs_table = Table(
    "v2rollout_recorded_inputs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout", String(100), nullable=False),
    Column("at", Float, nullable=False),
    Column("subject", String(200), nullable=True),
    Column("request_id", String(128), nullable=True),
    Column("inputs", Text, nullable=False),
    Index("ix_v2rollout_recorded_inputs_rollout_at", "rollout", "at"),
)
