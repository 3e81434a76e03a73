"""API keys: prefixed random secrets, stored only as SHA-256 digests, scoped to their owner.

A key is `tfa_` + 43 URL-safe characters (256 random bits), so it is told apart from a JWT
without a lookup and a fast hash is enough to store it (no dictionary to attack). Every query
takes the owner's id: one owner can never read, rotate or revoke another owner's key.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from shared import outbox
from shared.cache import Cache
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


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as stored: its identity and what can end it."""

    identity: KeyIdentity
    expires_at: datetime | None
    revoked_at: datetime | None
    secret_expires_at: datetime | None

    def checked(self) -> KeyIdentity:
        """The identity, or 401 with a code saying why the key is refused."""
        now = datetime.now(UTC)
        if self.revoked_at is not None:
            raise Unauthorized("The API key has been revoked", code="API_KEY_REVOKED")
        if self.expires_at is not None and self.expires_at <= now:
            raise Unauthorized("The API key has expired", code="API_KEY_EXPIRED")
        if self.secret_expires_at is not None and self.secret_expires_at <= now:
            raise Unauthorized("This API key was rotated and its grace period is over", code="API_KEY_ROTATED")
        return self.identity


async def lookup(conn: asyncpg.Connection, key_digest: bytes) -> KeyRecord:
    """The stored key with this digest, or 401 `INVALID_API_KEY`."""
    row = await conn.fetchrow(AUTHENTICATE_SQL, key_digest)
    if row is None:
        raise Unauthorized("The API key is invalid", code="INVALID_API_KEY")
    identity = KeyIdentity(row["id"], row["owner_id"], frozenset(row["scopes"]), row["rate_limit"])
    return KeyRecord(identity, row["expires_at"], row["revoked_at"], row["secret_expires_at"])


class KnownKeys:
    """The keys this process authenticated lately, so that a request with a known key skips
    the database: each kept for `ttl` seconds with the (wall-clock) time it was read.

    A revoke or rotate stamps the owner in Redis (`mark_changed`); the rate-limit check every
    key request makes already reads that stamp, and a key read before its owner's latest
    change is read again at once (`auth._api_key_principal`)."""

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: OrderedDict[bytes, tuple[KeyRecord, float]] = OrderedDict()

    def get(self, key_digest: bytes) -> tuple[KeyRecord, float] | None:
        found = self._entries.get(key_digest)
        if found is None:
            return None
        if time.time() - found[1] > self._ttl:
            del self._entries[key_digest]
            return None
        return found

    def put(self, key_digest: bytes, record: KeyRecord, read_at: float) -> None:
        if self._ttl <= 0:
            return
        self._entries[key_digest] = (record, read_at)
        self._entries.move_to_end(key_digest)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def drop(self, key_digest: bytes) -> None:
        self._entries.pop(key_digest, None)


def changed_key(cache: Cache, owner_id: uuid.UUID) -> str:
    return cache.key("apikey", "changed", owner_id)


async def mark_changed(cache: Cache, owner_id: uuid.UUID, ttl: float) -> None:
    """Tell every API process that this owner's keys changed (after the change committed)."""
    await cache.client.set(changed_key(cache, owner_id), repr(time.time()), ex=int(2 * ttl) + 60)


async def flush_last_used(conn: asyncpg.Connection, last_used: dict[uuid.UUID, datetime]) -> None:
    """Persist the `lastUsedAt` values collected in Redis, in one statement."""
    if last_used:
        await conn.execute(FLUSH_LAST_USED_SQL, list(last_used), list(last_used.values()))
