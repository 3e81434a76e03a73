"""The audit service's database access: batches of entries, daily partitions, chain checks."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta

import asyncpg
import structlog

from shared import audit_chain as chain
from shared.events import Event

log = structlog.get_logger(__name__)

COLUMNS = (
    "id", "owner_id", "chain_seq", "event_id", "type", "user_id", "actor_kind", "actor_id",
    "ip", "user_agent", "occurred_at", "recorded_at", "data", "prev_hash", "hash",
)
ADD_HEADS_SQL = """
INSERT INTO audit_chain_heads (owner_id, last_seq, last_hash)
SELECT o, 0, $2 FROM unnest($1::uuid[]) AS o ORDER BY o
ON CONFLICT (owner_id) DO NOTHING
"""
# Locked in a fixed order, so two replicas' batches never deadlock on each other's owners.
LOCK_HEADS_SQL = """
SELECT owner_id, last_seq, last_hash FROM audit_chain_heads
WHERE owner_id = ANY($1::uuid[]) ORDER BY owner_id FOR UPDATE
"""
# Claims the event ids not written before (a redelivered event's id is already there).
CLAIM_IDS_SQL = """
INSERT INTO audit_event_ids (event_id, recorded_at) SELECT unnest($1::uuid[]), $2
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""
PRUNE_IDS_SQL = "DELETE FROM audit_event_ids WHERE recorded_at < $1"
MOVE_HEADS_SQL = """
UPDATE audit_chain_heads h SET last_seq = u.seq, last_hash = u.hash
FROM unnest($1::uuid[], $2::bigint[], $3::bytea[]) AS u(owner_id, seq, hash)
WHERE h.owner_id = u.owner_id
"""
OWNERS_SQL = "SELECT owner_id FROM audit_chain_heads ORDER BY owner_id"
PARTITIONS_SQL = """
SELECT c.relname FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
WHERE p.relname = 'audit_log' AND c.relname ~ '^audit_log_p[0-9]{8}$'
"""


async def write_batch(
    conn: asyncpg.Connection, events: Sequence[Event], *, now: datetime | None = None
) -> int:
    """Write the events not yet recorded, each linked into its owner's chain, in one
    transaction; returns how many were new."""
    unique = list({e.id: e for e in events}.values())
    owners = sorted({e.ownerId for e in unique})
    async with conn.transaction():
        await conn.execute(ADD_HEADS_SQL, owners, chain.GENESIS)
        heads = {
            r["owner_id"]: (r["last_seq"], bytes(r["last_hash"]))
            for r in await conn.fetch(LOCK_HEADS_SQL, owners)
        }
        # Stamped once the owners' chains are held, so an owner's entries are recorded in
        # chain order and retention only ever drops the oldest part of a chain.
        recorded_at = now or datetime.now(UTC)
        new_ids = {
            r["event_id"] for r in await conn.fetch(CLAIM_IDS_SQL, [e.id for e in unique], recorded_at)
        }
        rows = []
        ids = _random_ids(len(new_ids))
        for event in unique:
            if event.id not in new_ids:
                continue
            seq, prev = heads[event.ownerId]
            entry = {
                "id": next(ids),
                "owner_id": event.ownerId,
                "chain_seq": seq + 1,
                "event_id": event.id,
                "type": event.type.value,
                "user_id": event.userId,
                "actor_kind": event.actor.kind,
                "actor_id": event.actor.id,
                "ip": event.ip,
                "user_agent": event.userAgent,
                "occurred_at": event.occurredAt,
                "recorded_at": recorded_at,
                "data": event.data,
                "prev_hash": prev,
            }
            entry["hash"] = chain.link(prev, entry)
            heads[event.ownerId] = (seq + 1, entry["hash"])
            rows.append(tuple(entry[c] for c in COLUMNS))
        if not rows:
            return 0
        await conn.copy_records_to_table("audit_log", records=rows, columns=COLUMNS)
        written = {row[1] for row in rows}
        moved = [o for o in owners if o in written]
        await conn.execute(
            MOVE_HEADS_SQL, moved, [heads[o][0] for o in moved], [heads[o][1] for o in moved]
        )
    return len(rows)


def _random_ids(count: int) -> Iterator[uuid.UUID]:
    """`count` version-4 UUIDs from one read of the OS's random source (uuid4() reads it once
    per id)."""
    raw = os.urandom(16 * count)
    return (uuid.UUID(bytes=raw[i : i + 16], version=4) for i in range(0, 16 * count, 16))


async def owners(conn: asyncpg.Connection) -> list[uuid.UUID]:
    return [r["owner_id"] for r in await conn.fetch(OWNERS_SQL)]


def partition_name(day: date) -> str:
    return f"audit_log_p{day:%Y%m%d}"


async def ensure_partitions(conn: asyncpg.Connection, today: date, days_ahead: int = 7) -> None:
    """Daily partitions from yesterday to `days_ahead` days on. A day whose rows are already in
    the default partition keeps them there (creating it would fail): nothing is lost."""
    existing = {r["relname"] for r in await conn.fetch(PARTITIONS_SQL)}
    for offset in range(-1, days_ahead + 1):
        day = today + timedelta(days=offset)
        name = partition_name(day)
        if name in existing:
            continue
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        try:
            async with conn.transaction():
                await conn.execute(
                    f"CREATE TABLE {name} PARTITION OF audit_log "
                    f"FOR VALUES FROM ('{start.isoformat()}') TO ('{(start + timedelta(days=1)).isoformat()}')"
                )
                await conn.execute(
                    f"CREATE TRIGGER {name}_no_truncate BEFORE TRUNCATE ON {name} "
                    "FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()"
                )
        except (asyncpg.CheckViolationError, asyncpg.DuplicateTableError) as exc:
            log.warning("audit partition not created", partition=name, error=str(exc))


async def drop_expired_partitions(conn: asyncpg.Connection, today: date, retention_days: int) -> list[str]:
    """Drop each daily partition that ends before the retention window; returns their names."""
    cutoff = today - timedelta(days=retention_days)
    dropped = []
    for row in await conn.fetch(PARTITIONS_SQL):
        name = row["relname"]
        day = datetime.strptime(name.removeprefix("audit_log_p"), "%Y%m%d").date()
        if day < cutoff:
            await conn.execute(f"DROP TABLE {name}")
            dropped.append(name)
    await conn.execute(PRUNE_IDS_SQL, datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=UTC))
    return sorted(dropped)
