"""Refused cross-owner attempts: told apart from plain misses, and put on the record.

A caller asking for an id that is not theirs gets the same 404 as for an id that does not exist
(nothing is revealed). When the id does belong to another owner, the 404 is a `ForeignResource`,
and the core middleware writes a `security.access_denied` event into that owner's audit trail,
naming the caller, after the request's own transaction has rolled back.
"""

from __future__ import annotations

import uuid

import asyncpg

from shared import outbox
from shared.errors import NotFound
from shared.events import AccessDeniedData, EventType

from api.domain.context import Context

OWNER_SQL = {
    "apiKey": "SELECT owner_id FROM api_keys WHERE id = $1",
    "webhook": "SELECT owner_id FROM webhooks WHERE id = $1",
    "webhookDelivery": """
        SELECT owner_id FROM webhook_deliveries WHERE id = $1
        UNION ALL SELECT owner_id FROM webhook_attempts WHERE id = $1
        LIMIT 1""",
}


class ForeignResource(NotFound):
    """A 404 for an id that exists under another owner."""

    def __init__(self, message: str, *, resource: str, resource_id: str, owner_id: uuid.UUID) -> None:
        super().__init__(message)
        self.resource = resource
        self.resource_id = resource_id
        self.owner_id = owner_id


async def not_found(
    conn: asyncpg.Connection, ctx: Context, resource: str, resource_id: uuid.UUID, message: str
) -> NotFound:
    """The 404 to raise for `resource_id`, marked when it is someone else's."""
    owner_id = await conn.fetchval(OWNER_SQL[resource], resource_id)
    if owner_id is not None and owner_id != ctx.owner_id:
        return ForeignResource(
            message, resource=resource, resource_id=str(resource_id), owner_id=owner_id
        )
    return NotFound(message)


async def record_denial(conn: asyncpg.Connection, ctx: Context, refused: ForeignResource) -> None:
    data = AccessDeniedData(
        resource=f"{refused.resource}:{refused.resource_id}",
        reason="belongs to another owner",
        callerOwnerId=str(ctx.owner_id),
    )
    await outbox.add(conn, ctx.with_owner(refused.owner_id).event(EventType.ACCESS_DENIED, data, None))
