"""The dispatcher's database access: deliveries to make, leases on them, and the attempt log.

A delivery is worked on only under a lease (`lease_until`), taken in the same statement that
reads it, so two messages for the same delivery (a broker redelivery, a retry scheduled twice)
never send it at the same time; the lease of a worker that died simply runs out.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg

from shared import outbox
from shared.events import Actor, Event, EventType, WebhookDeactivatedData

LIVE_SECRETS = """
ARRAY(SELECT s.ciphertext FROM webhook_secrets s
      WHERE s.webhook_id = w.id AND (s.expires_at IS NULL OR s.expires_at > now())
      ORDER BY s.created_at DESC, s.id) AS secrets
"""
# For a batch of events: each one's target webhooks (the owner's active subscribers to its type
# that existed when it occurred, or the one webhook a test names), a delivery row for each,
# leased at once when it is new. Rows that already existed (the broker redelivered the event)
# come back unleased, to be resumed.
OPEN_SQL = f"""
WITH e AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::bytea[], $5::uuid[],
                         $6::timestamptz[])
        AS e(owner_id, type, event_id, body, only_webhook, occurred_at)
),
w AS (
    SELECT e.event_id, e.owner_id, e.type, e.body, h.id, h.url, h.active
    FROM e JOIN webhooks h ON h.owner_id = e.owner_id
     AND CASE WHEN e.only_webhook IS NULL
              THEN h.active AND e.type = ANY(h.events) AND h.created_at <= e.occurred_at
              ELSE h.id = e.only_webhook END
),
created AS (
    INSERT INTO webhook_deliveries
        (id, owner_id, webhook_id, event_id, event_type, body, lease_until)
    SELECT gen_random_uuid(), w.owner_id, w.id, w.event_id, w.type, w.body,
           now() + make_interval(secs => $7)
    FROM w
    ON CONFLICT (webhook_id, event_id) DO NOTHING
    RETURNING id, webhook_id, event_id, status, attempts, run_base
)
SELECT c.event_id, c.id, c.webhook_id, c.status, c.attempts, c.run_base, true AS created,
       w.url, w.active, {LIVE_SECRETS}
FROM created c JOIN w ON w.id = c.webhook_id AND w.event_id = c.event_id
UNION ALL
SELECT d.event_id, d.id, d.webhook_id, d.status, d.attempts, d.run_base, false,
       w.url, w.active, NULL
FROM webhook_deliveries d JOIN w ON w.id = d.webhook_id AND w.event_id = d.event_id
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
# One statement for a batch of attempts: their log entries, their deliveries' new state, and
# each webhook's failure streak (reset by a success, lengthened by each event whose last attempt
# failed); returns the streaks that changed.
RECORD_SQL = """
WITH a AS (
    SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::int[], $5::text[], $6::int[],
                         $7::int[], $8::text[], $9::timestamptz[])
        AS a(owner_id, webhook_id, delivery_id, attempt, status, status_code, latency_ms, error,
             next_retry_at)
),
logged AS (
    INSERT INTO webhook_attempts (id, owner_id, webhook_id, delivery_id, attempt, status,
                                  status_code, latency_ms, error, next_retry_at)
    SELECT gen_random_uuid(), owner_id, webhook_id, delivery_id, attempt, status, status_code,
           latency_ms, error, next_retry_at
    FROM a
    ON CONFLICT (delivery_id, attempt) DO NOTHING
),
delivery AS (
    UPDATE webhook_deliveries d
    SET attempts = a.attempt, status = a.status, next_retry_at = a.next_retry_at,
        lease_until = NULL, updated_at = now()
    FROM a WHERE d.id = a.delivery_id AND d.attempts = a.attempt - 1
),
streak AS (
    SELECT webhook_id, bool_or(status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE status = 'failed') AS failed
    FROM a GROUP BY webhook_id
)
UPDATE webhooks h
SET consecutive_failures = CASE WHEN s.succeeded THEN s.failed
                                ELSE h.consecutive_failures + s.failed END
FROM streak s
WHERE h.id = s.webhook_id AND (s.failed > 0 OR (s.succeeded AND h.consecutive_failures <> 0))
RETURNING h.id, h.consecutive_failures, h.active
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


@dataclass(frozen=True, slots=True)
class Opening:
    """An event to fan out, with the body every delivery of it sends."""

    event: Event
    body: bytes
    only_webhook: uuid.UUID | None


async def open_deliveries(
    conn: asyncpg.Connection, batch: list[Opening], lease_seconds: float
) -> list[list[Target]]:
    """The targets of each event of the batch (same order). An event that appears twice in the
    batch (a broker duplicate) gets its new deliveries once: the copy resumes them instead."""
    unique = list({o.event.id: o for o in reversed(batch)}.values())
    rows = await conn.fetch(
        OPEN_SQL,
        [o.event.ownerId for o in unique],
        [o.event.type.value for o in unique],
        [o.event.id for o in unique],
        [o.body for o in unique],
        [o.only_webhook for o in unique],
        [o.event.occurredAt for o in unique],
        lease_seconds,
    )
    by_event: dict[uuid.UUID, list[Target]] = {}
    for r in rows:
        by_event.setdefault(r["event_id"], []).append(
            Target(
                r["id"], r["webhook_id"], r["status"], r["attempts"], r["run_base"], r["created"],
                r["url"], r["active"], list(r["secrets"]) if r["secrets"] is not None else None,
            )
        )
    results, seen = [], set()
    for opening in batch:
        targets = by_event.get(opening.event.id, [])
        if opening.event.id in seen:
            targets = [replace(t, created=False, secrets=None) for t in targets]
        seen.add(opening.event.id)
        results.append(targets)
    return results


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


async def record(
    conn: asyncpg.Connection, batch: list[tuple[Claimed, Attempt]]
) -> list[tuple[int, bool] | None]:
    """Log the attempts and move their deliveries on; for each, its webhook's failure streak and
    whether it is still active, when the streak changed."""
    rows = await conn.fetch(
        RECORD_SQL,
        [c.owner_id for c, _ in batch],
        [c.webhook_id for c, _ in batch],
        [c.delivery_id for c, _ in batch],
        [c.attempt for c, _ in batch],
        [a.status for _, a in batch],
        [a.status_code for _, a in batch],
        [a.latency_ms for _, a in batch],
        [a.error for _, a in batch],
        [a.next_retry_at for _, a in batch],
    )
    streaks = {r["id"]: (r["consecutive_failures"], r["active"]) for r in rows}
    return [streaks.get(c.webhook_id) for c, _ in batch]


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
