"""API keys: prefixed random secrets, stored only as SHA-256 digests, scoped to their owner.

A key is `tfa_` + 43 URL-safe characters (256 random bits), so it is told apart from a JWT
without a lookup and a fast hash is enough to store it (no dictionary to attack). Every query
takes the owner's id: one owner can never read, rotate or revoke another owner's key.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from shared import outbox
from shared.errors import Conflict, Unauthorized, ValidationFailed
from shared.events import ApiKeyData, EventType

from api.domain import access, pagination
from api.domain.context import Context

KEY_PREFIX = "tfa_"
DISPLAY_PREFIX_LENGTH = 12

INSERT_KEY_SQL = """
INSERT INTO api_keys (id, owner_id, name, prefix, scopes, rate_limit, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
RETURNING *
"""
INSERT_SECRET_SQL = """
INSERT INTO api_key_secrets (digest, owner_id, api_key_id, expires_at) VALUES ($1, $2, $3, $4)
"""
KEY_COLUMNS = """
id, name, prefix, scopes, rate_limit, expires_at, revoked_at, last_used_at, created_at, rotated_at
"""
GET_KEY_SQL = f"SELECT {KEY_COLUMNS} FROM api_keys WHERE owner_id = $1 AND id = $2"
LIST_KEYS_SQL = f"""
SELECT {KEY_COLUMNS} FROM api_keys
WHERE owner_id = $1 AND (created_at, id) < ($2, $3)
ORDER BY created_at DESC, id DESC
LIMIT $4
"""
EXPIRE_OLD_SECRETS_SQL = """
UPDATE api_key_secrets
SET expires_at = LEAST(COALESCE(expires_at, 'infinity'), $3)
WHERE owner_id = $1 AND api_key_id = $2
"""
MARK_ROTATED_SQL = f"""
UPDATE api_keys SET rotated_at = now(), prefix = $3
WHERE owner_id = $1 AND id = $2
  AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
RETURNING {KEY_COLUMNS}
"""
REVOKE_SQL = f"""
UPDATE api_keys SET revoked_at = now()
WHERE owner_id = $1 AND id = $2 AND revoked_at IS NULL
RETURNING {KEY_COLUMNS}
"""
AUTHENTICATE_SQL = """
SELECT k.id, k.owner_id, k.scopes, k.rate_limit, k.expires_at, k.revoked_at,
       s.expires_at AS secret_expires_at
FROM api_key_secrets s JOIN api_keys k ON k.id = s.api_key_id AND k.owner_id = s.owner_id
WHERE s.digest = $1
"""
# Only rows whose stamp moved are written: the flusher sends every stamp Redis holds, each time.
FLUSH_LAST_USED_SQL = """
UPDATE api_keys k SET last_used_at = u.at
FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)
WHERE k.id = u.id AND (k.last_used_at IS NULL OR k.last_used_at < u.at)
"""


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def looks_like_key(credential: str) -> bool:
    return credential.startswith(KEY_PREFIX)


def key_view(row: asyncpg.Record, last_used: datetime | None = None) -> dict[str, Any]:
    last = row["last_used_at"]
    if last_used is not None and (last is None or last_used > last):
        last = last_used
    return {
        "id": row["id"],
        "name": row["name"],
        "prefix": row["prefix"],
        "scopes": list(row["scopes"]),
        "rateLimit": row["rate_limit"],
        "expiresAt": row["expires_at"],
        "revokedAt": row["revoked_at"],
        "lastUsedAt": last,
        "createdAt": row["created_at"],
        "rotatedAt": row["rotated_at"],
        "active": row["revoked_at"] is None
        and (row["expires_at"] is None or row["expires_at"] > datetime.now(UTC)),
    }


def _event_data(row: asyncpg.Record) -> ApiKeyData:
    return ApiKeyData(
        apiKeyId=str(row["id"]), name=row["name"], prefix=row["prefix"], scopes=list(row["scopes"])
    )


def _checked_expiry(expires_at: datetime) -> datetime:
    """`expiresAt` in UTC, or a 400 naming it when it is past or not storable."""
    try:
        # A time near year 1 or 9999 with an offset falls outside datetime's range in UTC.
        expires_at = expires_at.astimezone(UTC)
    except OverflowError:
        message = "must be a time between years 1 and 9999 (UTC)"
    else:
        if expires_at > datetime.now(UTC):
            return expires_at
        message = "must be in the future"
    raise ValidationFailed(
        f"expiresAt {message}", details={"fields": [{"field": "expiresAt", "message": message}]}
    )


async def create(
    conn: asyncpg.Connection,
    ctx: Context,
    *,
    name: str,
    scopes: list[str],
    rate_limit: int,
    expires_at: datetime | None,
) -> dict[str, Any]:
    """Create a key; the returned `apiKey` is the only time the secret is ever shown."""
    if expires_at is not None:
        expires_at = _checked_expiry(expires_at)
    key = new_key()
    async with conn.transaction():
        row = await conn.fetchrow(
            INSERT_KEY_SQL,
            uuid.uuid4(),
            ctx.owner_id,
            name,
            key[:DISPLAY_PREFIX_LENGTH],
            sorted(set(scopes)),
            rate_limit,
            expires_at,
        )
        assert row is not None
        await conn.execute(INSERT_SECRET_SQL, digest(key), ctx.owner_id, row["id"], None)
        await outbox.add(conn, ctx.event(EventType.API_KEY_CREATED, _event_data(row), None))
    return {"apiKey": key, **key_view(row)}


async def get(conn: asyncpg.Connection, ctx: Context, key_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow(GET_KEY_SQL, ctx.owner_id, key_id)
    if row is None:
        raise await access.not_found(conn, ctx, "apiKey", key_id, "API key not found")
    return row


async def list_page(
    conn: asyncpg.Connection, ctx: Context, limit: int, cursor: str | None
) -> tuple[list[asyncpg.Record], str | None]:
    return await pagination.fetch_page(conn, LIST_KEYS_SQL, ctx.owner_id, limit, cursor)


async def rotate(
    conn: asyncpg.Connection, ctx: Context, key_id: uuid.UUID, grace_seconds: int
) -> dict[str, Any]:
    """Issue a new secret; the old ones keep working for `grace_seconds` more."""
    key = new_key()
    grace_ends = datetime.now(UTC) + timedelta(seconds=grace_seconds)
    async with conn.transaction():
        row = await conn.fetchrow(MARK_ROTATED_SQL, ctx.owner_id, key_id, key[:DISPLAY_PREFIX_LENGTH])
        if row is None:
            current = await get(conn, ctx, key_id)  # 404 when it is not this owner's key
            # The caller's credentials are fine (so not a 401): the key's state forbids it.
            if current["revoked_at"] is not None:
                raise Conflict("A revoked API key cannot be rotated", code="API_KEY_REVOKED")
            raise Conflict("An expired API key cannot be rotated", code="API_KEY_EXPIRED")
        await conn.execute(EXPIRE_OLD_SECRETS_SQL, ctx.owner_id, key_id, grace_ends)
        await conn.execute(INSERT_SECRET_SQL, digest(key), ctx.owner_id, key_id, None)
        await outbox.add(conn, ctx.event(EventType.API_KEY_ROTATED, _event_data(row), None))
    return {"apiKey": key, **key_view(row), "previousKeyExpiresAt": grace_ends}


async def revoke(conn: asyncpg.Connection, ctx: Context, key_id: uuid.UUID) -> asyncpg.Record:
    """Revoke at once; revoking again answers the key as it is, with no second event."""
    async with conn.transaction():
        row = await conn.fetchrow(REVOKE_SQL, ctx.owner_id, key_id)
        if row is None:
            return await get(conn, ctx, key_id)  # already revoked, or 404 when not this owner's
        await outbox.add(conn, ctx.event(EventType.API_KEY_REVOKED, _event_data(row), None))
    return row


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """What authenticating a key yields: whose it is and what it may do."""

    id: uuid.UUID
    owner_id: uuid.UUID
    scopes: frozenset[str]
    rate_limit: int


async def authenticate(conn: asyncpg.Connection, key: str) -> KeyIdentity:
    """Resolve a presented key, or 401 with a code saying why it is refused."""
    row = await conn.fetchrow(AUTHENTICATE_SQL, digest(key))
    if row is None:
        raise Unauthorized("The API key is invalid", code="INVALID_API_KEY")
    now = datetime.now(UTC)
    if row["revoked_at"] is not None:
        raise Unauthorized("The API key has been revoked", code="API_KEY_REVOKED")
    if row["expires_at"] is not None and row["expires_at"] <= now:
        raise Unauthorized("The API key has expired", code="API_KEY_EXPIRED")
    if row["secret_expires_at"] is not None and row["secret_expires_at"] <= now:
        raise Unauthorized("This API key was rotated and its grace period is over", code="API_KEY_ROTATED")
    return KeyIdentity(row["id"], row["owner_id"], frozenset(row["scopes"]), row["rate_limit"])


async def flush_last_used(conn: asyncpg.Connection, last_used: dict[uuid.UUID, datetime]) -> None:
    """Persist the `lastUsedAt` values collected in Redis, in one statement."""
    if last_used:
        await conn.execute(FLUSH_LAST_USED_SQL, list(last_used), list(last_used.values()))
