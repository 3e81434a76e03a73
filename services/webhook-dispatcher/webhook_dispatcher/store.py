"""The dispatcher's database access: deliveries to make, leases on them, and the attempt log.

A delivery is worked on only under a lease (`lease_until`), taken in the same statement that
reads it, so two messages for the same delivery (a broker redelivery, a retry scheduled twice)
never send it at the same time; the lease of a worker that died simply runs out.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared import outbox
from shared.events import Actor, Event, EventType, WebhookDeactivatedData

LIVE_SECRETS = """
ARRAY(SELECT s.ciphertext FROM webhook_secrets s
      WHERE s.webhook_id = w.id AND (s.expires_at IS NULL OR s.expires_at > now())
      ORDER BY s.created_at DESC, s.id) AS secrets
"""
# For one event: its target webhooks (the owner's active subscribers to its type that existed
# when it occurred, or the one webhook a test names), a delivery row for each, leased at once when it is new. Rows that
# already existed (the broker redelivered the event) come back unleased, to be resumed.
OPEN_SQL = f"""
WITH w AS (
    SELECT id, url, active FROM webhooks
    WHERE owner_id = $1
      AND CASE WHEN $5::uuid IS NULL THEN active AND $2 = ANY(events) AND created_at <= $7
               ELSE id = $5 END
),
created AS (
    INSERT INTO webhook_deliveries
        (id, owner_id, webhook_id, event_id, event_type, body, lease_until)
    SELECT gen_random_uuid(), $1, w.id, $3, $2, $4, now() + make_interval(secs => $6) FROM w
    ON CONFLICT (webhook_id, event_id) DO NOTHING
    RETURNING id, webhook_id, status, attempts, run_base
)
SELECT c.id, c.webhook_id, c.status, c.attempts, c.run_base, true AS created, w.url, w.active,
       {LIVE_SECRETS}
FROM created c JOIN w ON w.id = c.webhook_id
UNION ALL
SELECT d.id, d.webhook_id, d.status, d.attempts, d.run_base, false, w.url, w.active, NULL
FROM webhook_deliveries d JOIN w ON w.id = d.webhook_id
WHERE d.event_id = $3
"""
CLAIM_SQL = f"""
WITH d AS (
    UPDATE webhook_deliveries SET lease_until = now() + make_interval(secs => $3)
    WHERE id = $1 AND status = 'pending' AND attempts = $2 - 1
      AND (lease_until IS NULL OR lease_until < now())
    RETURNING id, owner_id, webhook_id, event_id, event_type, body, run_base
)
SELECT d.*, w.url, w.active, {LIVE_SECRETS}
FROM d JOIN webhooks w ON w.id = d.webhook_id
"""
LEASED_SQL = """
SELECT true FROM webhook_deliveries
WHERE id = $1 AND status = 'pending' AND attempts = $2 - 1 AND lease_until >= now()
"""
PENDING_SQL = "SELECT attempts FROM webhook_deliveries WHERE id = $1 AND status = 'pending'"
RELEASE_SQL = "UPDATE webhook_deliveries SET lease_until = NULL WHERE id = $1"
ABANDON_SQL = """
UPDATE webhook_deliveries
SET status = 'failed', lease_until = NULL, next_retry_at = NULL, updated_at = now()
WHERE id = $1
"""
# One statement: the attempt's log entry, the delivery's new state, the webhook's failure
# streak (reset by a success, lengthened by an event whose last attempt failed).
RECORD_SQL = """
WITH logged AS (
    INSERT INTO webhook_attempts (id, owner_id, webhook_id, delivery_id, attempt, status,
                                  status_code, latency_ms, error, next_retry_at)
    VALUES (gen_random_uuid(), $1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (delivery_id, attempt) DO NOTHING
),
delivery AS (
    UPDATE webhook_deliveries
    SET attempts = $4, status = $5, next_retry_at = $9, lease_until = NULL, updated_at = now()
    WHERE id = $3 AND attempts = $4 - 1
)
UPDATE webhooks
SET consecutive_failures = CASE WHEN $5 = 'succeeded' THEN 0 ELSE consecutive_failures + 1 END
WHERE id = $2 AND (($5 = 'succeeded' AND consecutive_failures <> 0) OR $5 = 'failed')
RETURNING consecutive_failures, active
"""
DEACTIVATE_SQL = """
UPDATE webhooks
SET active = false, disabled_at = now(), disabled_reason = $2, updated_at = now()
WHERE id = $1 AND active
RETURNING owner_id, url, consecutive_failures
"""

SYSTEM = Actor(kind="system", id="webhook-dispatcher")


@dataclass(frozen=True, slots=True)
class Target:
    """A delivery of one event to one webhook, as the event's fan-out found it."""

    delivery_id: uuid.UUID
    webhook_id: uuid.UUID
    status: str
    attempts: int
    run_base: int
    created: bool
    url: str
    active: bool
    secrets: list[bytes] | None


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this worker holds the lease on, with all it needs for one attempt."""

    delivery_id: uuid.UUID
    owner_id: uuid.UUID
    webhook_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    body: bytes
    attempt: int
    run_base: int
    url: str
    active: bool
    secrets: list[bytes]


async def open_deliveries(
    conn: asyncpg.Connection,
    event: Event,
    body: bytes,
    only_webhook: uuid.UUID | None,
    lease_seconds: float,
) -> list[Target]:
    rows = await conn.fetch(
        OPEN_SQL,
        event.ownerId,
        event.type.value,
        event.id,
        body,
        only_webhook,
        lease_seconds,
        event.occurredAt,
    )
    return [
        Target(
            r["id"], r["webhook_id"], r["status"], r["attempts"], r["run_base"], r["created"],
            r["url"], r["active"], list(r["secrets"]) if r["secrets"] is not None else None,
        )
        for r in rows
    ]


def claimed_new(target: Target, event: Event, body: bytes) -> Claimed:
    """A delivery `open_deliveries` created (and leased) just now: its first attempt."""
    assert target.created and target.secrets is not None
    return Claimed(
        target.delivery_id, event.ownerId, target.webhook_id, event.id, event.type.value, body,
        1, 0, target.url, target.active, target.secrets,
    )


async def claim(
    conn: asyncpg.Connection, delivery_id: uuid.UUID, attempt: int, lease_seconds: float
) -> Claimed | None:
    row = await conn.fetchrow(CLAIM_SQL, delivery_id, attempt, lease_seconds)
    if row is None:
        return None
    return Claimed(
        row["id"], row["owner_id"], row["webhook_id"], row["event_id"], row["event_type"],
        bytes(row["body"]), attempt, row["run_base"], row["url"], row["active"], list(row["secrets"]),
    )


async def is_leased(conn: asyncpg.Connection, delivery_id: uuid.UUID, attempt: int) -> bool:
    """Whether a claim failed only because another worker holds the lease (so: try later)."""
    return bool(await conn.fetchval(LEASED_SQL, delivery_id, attempt))


async def pending_attempts(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> int | None:
    return await conn.fetchval(PENDING_SQL, delivery_id)


async def release(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> None:
    await conn.execute(RELEASE_SQL, delivery_id)


async def abandon(conn: asyncpg.Connection, delivery_id: uuid.UUID) -> None:
    """The webhook was turned off while the delivery waited: it ends without an attempt."""
    await conn.execute(ABANDON_SQL, delivery_id)


@dataclass(frozen=True, slots=True)
class Attempt:
    status: str  # succeeded | pending (a retry follows) | failed (none does)
    status_code: int | None
    latency_ms: int
    error: str | None
    next_retry_at: datetime | None


async def record(conn: asyncpg.Connection, claimed: Claimed, attempt: Attempt) -> tuple[int, bool] | None:
    """Log the attempt and move the delivery on; the webhook's failure streak and whether it is
    still active, when the streak changed."""
    row = await conn.fetchrow(
        RECORD_SQL,
        claimed.owner_id,
        claimed.webhook_id,
        claimed.delivery_id,
        claimed.attempt,
        attempt.status,
        attempt.status_code,
        attempt.latency_ms,
        attempt.error,
        attempt.next_retry_at,
    )
    return (row["consecutive_failures"], row["active"]) if row is not None else None


async def deactivate(conn: asyncpg.Connection, webhook_id: uuid.UUID, reason: str) -> bool:
    """Turn the webhook off and say so in the owner's audit trail (an outbox event)."""
    async with conn.transaction():
        row = await conn.fetchrow(DEACTIVATE_SQL, webhook_id, reason)
        if row is None:
            return False  # already off
        data = WebhookDeactivatedData(
            webhookId=str(webhook_id),
            url=row["url"],
            reason=reason,
            consecutiveFailures=row["consecutive_failures"],
        )
        event = Event.build(
            EventType.WEBHOOK_DEACTIVATED, data, ownerId=row["owner_id"], actor=SYSTEM
        )
        await outbox.add(conn, event)
    return True
