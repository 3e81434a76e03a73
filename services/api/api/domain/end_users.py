"""End users: the people 2FA is about, always inside one owner's namespace.

An account acting with its user token is its own end user (external id = the account id); an
API key names its owner's end users by the app's `userId`. Lookups take the owner from the
`Context`, never from the request, so another owner's users are unreachable by construction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from api.domain.context import Context

GET_SQL = """
SELECT id, external_id, device_generation FROM end_users WHERE owner_id = $1 AND external_id = $2
"""
UPSERT_SQL = """
INSERT INTO end_users (id, owner_id, external_id) VALUES ($1, $2, $3)
ON CONFLICT (owner_id, external_id) DO UPDATE SET external_id = EXCLUDED.external_id
RETURNING id, external_id, device_generation
"""
BUMP_GENERATION_SQL = """
UPDATE end_users SET device_generation = device_generation + 1 WHERE owner_id = $1 AND id = $2
"""


@dataclass(frozen=True, slots=True)
class EndUser:
    id: uuid.UUID
    owner_id: uuid.UUID
    external_id: str
    device_generation: int

    @property
    def aad(self) -> bytes:
        """Associated data binding stored secrets to this owner and user."""
        return f"{self.owner_id}:{self.id}".encode()


def _from_row(ctx: Context, row: asyncpg.Record) -> EndUser:
    return EndUser(row["id"], ctx.owner_id, row["external_id"], row["device_generation"])


async def find(conn: asyncpg.Connection, ctx: Context, external_id: str) -> EndUser | None:
    row = await conn.fetchrow(GET_SQL, ctx.owner_id, external_id)
    return _from_row(ctx, row) if row else None


async def get_or_create(conn: asyncpg.Connection, ctx: Context, external_id: str) -> EndUser:
    """The owner's end user with this id, created on first use."""
    found = await find(conn, ctx, external_id)
    if found is not None:
        return found
    row = await conn.fetchrow(UPSERT_SQL, uuid.uuid4(), ctx.owner_id, external_id)
    return _from_row(ctx, row)


async def forget_devices(conn: asyncpg.Connection, user: EndUser) -> None:
    await conn.execute(BUMP_GENERATION_SQL, user.owner_id, user.id)
