"""Webhooks: an owner's subscriptions, their signing secrets, and the delivery log they read.

Every query takes the owner's id, so one owner never sees or changes another's webhook (404).
Secrets are stored encrypted (signing needs them) and shown once, at creation or rotation.
Deliveries themselves are made by the webhook-dispatcher; here they are requested (test,
redeliver) through outbox events and read back from the log it writes.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from shared import outbox, url_guard, webhook_signing
from shared.crypto import SecretBox
from shared.errors import Conflict, ValidationFailed
from shared.events import EventType, RedeliveryData, WebhookData, WebhookTestData

from api.domain import access, pagination
from api.domain.context import Context

COLUMNS = """
id, url, events, description, active, consecutive_failures, disabled_at, disabled_reason,
created_at, updated_at
"""
INSERT_SQL = f"""
INSERT INTO webhooks (id, owner_id, url, events, description)
VALUES ($1, $2, $3, $4, $5)
RETURNING {COLUMNS}
"""
INSERT_SECRET_SQL = """
INSERT INTO webhook_secrets (id, owner_id, webhook_id, ciphertext) VALUES ($1, $2, $3, $4)
"""
GET_SQL = f"SELECT {COLUMNS} FROM webhooks WHERE owner_id = $1 AND id = $2"
LIST_SQL = f"""
SELECT {COLUMNS} FROM webhooks
WHERE owner_id = $1 AND (created_at, id) < ($2, $3)
ORDER BY created_at DESC, id DESC
LIMIT $4
"""
# A field left out (NULL) keeps its value. Turning a webhook back on clears its failure streak.
UPDATE_SQL = f"""
UPDATE webhooks SET
    url = COALESCE($3, url),
    events = COALESCE($4, events),
    description = CASE WHEN $5 THEN $6 ELSE description END,
    active = COALESCE($7, active),
    consecutive_failures = CASE WHEN $7 AND NOT active THEN 0 ELSE consecutive_failures END,
    disabled_at = CASE WHEN $7 THEN NULL ELSE disabled_at END,
    disabled_reason = CASE WHEN $7 THEN NULL ELSE disabled_reason END,
    updated_at = now()
WHERE owner_id = $1 AND id = $2
RETURNING {COLUMNS}
"""
DELETE_SQL = f"DELETE FROM webhooks WHERE owner_id = $1 AND id = $2 RETURNING {COLUMNS}"
EXPIRE_SECRETS_SQL = """
UPDATE webhook_secrets SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), $3)
WHERE owner_id = $1 AND webhook_id = $2
"""
DELIVERIES_SQL = """
SELECT a.id, a.delivery_id, d.event_id, d.event_type, a.attempt, a.status, a.status_code,
       a.latency_ms, a.error, a.next_retry_at, a.created_at
FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
WHERE a.owner_id = $1 AND (a.created_at, a.id) < ($2, $3)
  AND a.webhook_id = $4 AND ($5::text IS NULL OR a.status = $5)
ORDER BY a.created_at DESC, a.id DESC
LIMIT $6
"""
# The id in the redeliver path may be a log entry's `id` (one attempt) or its `deliveryId`.
# The delivery starts a new run: a fresh retry budget, attempt numbers continuing.
REDELIVER_SQL = """
UPDATE webhook_deliveries d
SET status = 'pending', run_base = attempts, next_retry_at = now(), updated_at = now()
WHERE d.owner_id = $1 AND d.webhook_id = $2
  AND d.id = COALESCE(
      (SELECT delivery_id FROM webhook_attempts WHERE id = $3 AND owner_id = $1), $3)
RETURNING d.id, d.event_id
"""


def view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "url": row["url"],
        "events": list(row["events"]),
        "description": row["description"],
        "active": row["active"],
        "consecutiveFailures": row["consecutive_failures"],
        "disabledAt": row["disabled_at"],
        "disabledReason": row["disabled_reason"],
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
    }


def delivery_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "deliveryId": row["delivery_id"],
        "eventId": row["event_id"],
        "event": row["event_type"],
        "attempt": row["attempt"],
        "status": row["status"],
        "statusCode": row["status_code"],
        "latencyMs": row["latency_ms"],
        "error": row["error"],
        "nextRetryAt": row["next_retry_at"],
        "createdAt": row["created_at"],
    }


async def checked_url(raw: str, *, allow_private: bool) -> str:
    """The URL when it may receive webhooks; otherwise a 400 whose code says why."""
    try:
        return str(await url_guard.check(raw, allow_private=allow_private))
    except url_guard.UrlRefused as exc:
        raise ValidationFailed(
            f"url {exc.message}",
            code=exc.code,
            details={"fields": [{"field": "url", "message": exc.message}]},
        ) from None


def _event_data(row: asyncpg.Record) -> WebhookData:
    return WebhookData(
        webhookId=str(row["id"]), url=row["url"], events=list(row["events"]), active=row["active"]
    )


async def _add_secret(
    conn: asyncpg.Connection, ctx: Context, box: SecretBox, webhook_id: uuid.UUID
) -> str:
    """A new signing secret for the webhook, stored encrypted; returned for showing once."""
    secret = webhook_signing.new_secret()
    sealed = box.encrypt(secret.encode(), webhook_signing.secret_aad(ctx.owner_id, webhook_id))
    await conn.execute(INSERT_SECRET_SQL, uuid.uuid4(), ctx.owner_id, webhook_id, sealed)
    return secret


async def create(
    conn: asyncpg.Connection,
    ctx: Context,
    box: SecretBox,
    *,
    url: str,
    events: list[str],
    description: str | None,
) -> dict[str, Any]:
    """Create an active webhook; the returned `secret` is the only time it is shown."""
    webhook_id = uuid.uuid4()
    async with conn.transaction():
        row = await conn.fetchrow(INSERT_SQL, webhook_id, ctx.owner_id, url, events, description)
        assert row is not None
        secret = await _add_secret(conn, ctx, box, webhook_id)
        await outbox.add(conn, ctx.event(EventType.WEBHOOK_CREATED, _event_data(row), None))
    return {**view(row), "secret": secret}


async def get(conn: asyncpg.Connection, ctx: Context, webhook_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow(GET_SQL, ctx.owner_id, webhook_id)
    if row is None:
        raise await access.not_found(conn, ctx, "webhook", webhook_id, "Webhook not found")
    return row


async def list_page(
    conn: asyncpg.Connection, ctx: Context, limit: int, cursor: str | None
) -> tuple[list[asyncpg.Record], str | None]:
    return await pagination.fetch_page(conn, LIST_SQL, ctx.owner_id, limit, cursor)


async def update(
    conn: asyncpg.Connection, ctx: Context, webhook_id: uuid.UUID, changes: dict[str, Any]
) -> asyncpg.Record:
    """Apply the fields present in `changes` (a JSON `null` description clears it)."""
    async with conn.transaction():
        row = await conn.fetchrow(
            UPDATE_SQL,
            ctx.owner_id,
            webhook_id,
            changes.get("url"),
            changes.get("events"),
            "description" in changes,
            changes.get("description"),
            changes.get("active"),
        )
        if row is None:
            raise await access.not_found(conn, ctx, "webhook", webhook_id, "Webhook not found")
        await outbox.add(conn, ctx.event(EventType.WEBHOOK_UPDATED, _event_data(row), None))
    return row


async def delete(conn: asyncpg.Connection, ctx: Context, webhook_id: uuid.UUID) -> asyncpg.Record:
    """Delete the webhook with its secrets and delivery log; pending retries are dropped."""
    async with conn.transaction():
        row = await conn.fetchrow(DELETE_SQL, ctx.owner_id, webhook_id)
        if row is None:
            raise await access.not_found(conn, ctx, "webhook", webhook_id, "Webhook not found")
        await outbox.add(conn, ctx.event(EventType.WEBHOOK_DELETED, _event_data(row), None))
    return row


async def rotate_secret(
    conn: asyncpg.Connection, ctx: Context, box: SecretBox, webhook_id: uuid.UUID, grace_seconds: int
) -> dict[str, Any]:
    """A new secret; the previous ones keep signing deliveries for `grace_seconds` more."""
    grace_ends = datetime.now(UTC) + timedelta(seconds=grace_seconds)
    async with conn.transaction():
        row = await get(conn, ctx, webhook_id)
        await conn.execute(EXPIRE_SECRETS_SQL, ctx.owner_id, webhook_id, grace_ends)
        secret = await _add_secret(conn, ctx, box, webhook_id)
        await outbox.add(conn, ctx.event(EventType.WEBHOOK_SECRET_ROTATED, _event_data(row), None))
    return {"id": webhook_id, "secret": secret, "previousSecretExpiresAt": grace_ends}


async def send_test(conn: asyncpg.Connection, ctx: Context, webhook_id: uuid.UUID) -> dict[str, Any]:
    """Queue a `webhook.test` event for this webhook alone (active or not, subscribed or not)."""
    async with conn.transaction():
        await get(conn, ctx, webhook_id)
        user_id = str(ctx.owner_id)
        event = ctx.event(
            EventType.WEBHOOK_TEST, WebhookTestData(userId=user_id, webhookId=str(webhook_id)), user_id
        )
        await outbox.add(conn, event)
    return {"queued": True, "eventId": event.id}


async def deliveries_page(
    conn: asyncpg.Connection,
    ctx: Context,
    webhook_id: uuid.UUID,
    status: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[asyncpg.Record], str | None]:
    await get(conn, ctx, webhook_id)  # 404 unless it is the caller's
    return await pagination.fetch_page(
        conn, DELIVERIES_SQL, ctx.owner_id, limit, cursor, webhook_id, status
    )


async def redeliver(
    conn: asyncpg.Connection, ctx: Context, webhook_id: uuid.UUID, delivery_id: uuid.UUID
) -> dict[str, Any]:
    """Send a delivery again, with a fresh retry budget and the same event id."""
    async with conn.transaction():
        webhook = await get(conn, ctx, webhook_id)
        if not webhook["active"]:
            raise Conflict(
                "The webhook is inactive; turn it back on (PATCH active: true) first",
                code="WEBHOOK_INACTIVE",
            )
        row = await conn.fetchrow(REDELIVER_SQL, ctx.owner_id, webhook_id, delivery_id)
        if row is None:
            raise await access.not_found(
                conn, ctx, "webhookDelivery", delivery_id, "Delivery not found"
            )
        data = RedeliveryData(webhookId=str(webhook_id), deliveryId=str(row["id"]))
        await outbox.add(conn, ctx.event(EventType.WEBHOOK_REDELIVERY_REQUESTED, data, None))
    return {"queued": True, "eventId": row["event_id"], "deliveryId": row["id"]}
