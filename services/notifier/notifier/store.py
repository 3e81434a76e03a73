"""The `notifications` table: one row per command (keyed by its event id), written by the notifier.

A row only ever holds the masked destination. 'sent' is final: a later write for the same
command (a redelivery) leaves it as it is, so the row always names the message that went out.
"""

from __future__ import annotations

import uuid
from typing import Literal

import asyncpg

from shared import metrics

Status = Literal["sent", "retrying", "failed"]

STATUS_SQL = "SELECT status FROM notifications WHERE id = $1"

RECORD_SQL = """
INSERT INTO notifications (id, owner_id, channel, masked_to, status, attempts, provider_id, error)
VALUES ($1, $2, $3, $4, $5, 1, $6, $7)
ON CONFLICT (id) DO UPDATE
SET status = EXCLUDED.status,
    attempts = notifications.attempts + 1,
    provider_id = EXCLUDED.provider_id,
    error = EXCLUDED.error,
    updated_at = now()
WHERE notifications.status <> 'sent'
"""


async def status(conn: asyncpg.Connection, command_id: uuid.UUID) -> Status | None:
    """The recorded status of a command, or None when it was never tried."""
    found: Status | None = await conn.fetchval(STATUS_SQL, command_id)
    return found


async def record(
    conn: asyncpg.Connection,
    *,
    command_id: uuid.UUID,
    owner_id: uuid.UUID,
    channel: str,
    masked_to: str,
    status: Status,
    provider_id: str | None = None,
    error: str | None = None,
) -> None:
    """Record one attempt at a command (counting it) and where it stands now."""
    await conn.execute(
        RECORD_SQL, command_id, owner_id, channel, masked_to, status, provider_id, error
    )
    metrics.NOTIFICATIONS.labels(channel, status).inc()
