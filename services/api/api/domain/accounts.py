"""Accounts: registration, password login, refresh-token rotation with reuse detection, logout.

Passwords are bcrypt-hashed in a thread pool so hashing never blocks the event loop (bcrypt
releases the GIL). Refresh tokens are single-use and grouped in families, one per login: using
one twice means it was stolen, so the whole family is revoked.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import bcrypt

from shared import outbox
from shared.config import Settings
from shared.errors import Conflict, NotFound, Unauthorized
from shared.events import EventType, LoginData, RegisteredData, UserData

from api.domain import tokens
from api.domain.context import Context, Origin

INSERT_ACCOUNT_SQL = """
INSERT INTO accounts (id, email, username, password_hash)
VALUES ($1, $2, $3, $4)
RETURNING id, email, username, created_at
"""
FIND_LOGIN_SQL = """
SELECT id, email, username, password_hash, created_at FROM accounts
WHERE lower(email) = lower($1) OR lower(username) = lower($1)
LIMIT 1
"""
GET_ACCOUNT_SQL = "SELECT id, email, username, password_hash, created_at FROM accounts WHERE id = $1"
INSERT_REFRESH_SQL = """
INSERT INTO refresh_tokens (id, account_id, family_id, expires_at) VALUES ($1, $2, $3, $4)
"""
CLAIM_REFRESH_SQL = """
SELECT id, account_id, family_id, expires_at, used_at, revoked_at FROM refresh_tokens
WHERE id = $1 FOR UPDATE
"""
MARK_REFRESH_USED_SQL = "UPDATE refresh_tokens SET used_at = now() WHERE id = $1"
REVOKE_FAMILY_SQL = """
UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL
"""

BCRYPT_MAX_BYTES = 72
UNIQUE_FIELDS = {"accounts_email_key": "email", "accounts_username_key": "username"}

Offload = Callable[..., Awaitable[Any]]


def account_view(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "email": row["email"],
        "username": row["username"],
        "createdAt": row["created_at"],
    }


def hash_password(password: str, rounds: int) -> bytes:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds))


def check_password(password: str, hashed: bytes) -> bool:
    secret = password.encode()
    # bcrypt 5 raises on more than 72 bytes instead of truncating. No stored password is that
    # long (registration refuses them), so a longer one is simply wrong; the answer takes no
    # longer for an existing account than for an unknown one, so it reveals nothing.
    if len(secret) > BCRYPT_MAX_BYTES:
        return False
    return bcrypt.checkpw(secret, hashed)


async def register(
    conn: asyncpg.Connection,
    *,
    email: str,
    username: str,
    password: str,
    settings: Settings,
    offload: Offload,
    origin: Origin,
) -> dict[str, Any]:
    """Create an account; 409 naming the field when the email or username is taken."""
    hashed = await offload(hash_password, password, settings.BCRYPT_ROUNDS)
    account_id = uuid.uuid4()
    try:
        async with conn.transaction():
            row = await conn.fetchrow(
                INSERT_ACCOUNT_SQL, account_id, email, username, hashed.decode()
            )
            ctx = Context.for_account(account_id, origin)
            data = RegisteredData(userId=str(account_id), username=username)
            await outbox.add(conn, ctx.event(EventType.USER_REGISTERED, data, str(account_id)))
    except asyncpg.UniqueViolationError as exc:
        field = UNIQUE_FIELDS.get(exc.constraint_name or "", "email")
        raise Conflict(
            f"An account with this {field} already exists",
            code=f"{field.upper()}_TAKEN",
            details={"field": field},
        ) from None
    assert row is not None
    return account_view(row)


async def find_for_login(conn: asyncpg.Connection, email_or_username: str) -> asyncpg.Record | None:
    return await conn.fetchrow(FIND_LOGIN_SQL, email_or_username)


async def verify_password(
    row: asyncpg.Record | None, password: str, dummy_hash: bytes, offload: Offload
) -> bool:
    """Check the password; an unknown account is checked against a dummy hash so that the
    response time does not reveal whether the account exists."""
    hashed = row["password_hash"].encode() if row is not None else dummy_hash
    matches = await offload(check_password, password, hashed)
    return bool(matches and row is not None)


async def issue_session(
    conn: asyncpg.Connection,
    account: asyncpg.Record,
    settings: Settings,
    origin: Origin,
    method: str = "password",
    two_factor_method: str | None = None,
) -> dict[str, Any]:
    """Start a login session: a new refresh-token family, the token pair and `user.login`."""
    account_id = account["id"]
    family_id = uuid.uuid4()
    async with conn.transaction():
        pair = await _new_pair(conn, account_id, family_id, settings)
        ctx = Context.for_account(account_id, origin)
        data = LoginData(userId=str(account_id), method=method, twoFactorMethod=two_factor_method)  # type: ignore[arg-type]
        await outbox.add(conn, ctx.event(EventType.USER_LOGIN, data, str(account_id)))
    return {**pair.as_payload(), "user": account_view(account)}


async def _new_pair(
    conn: asyncpg.Connection, account_id: uuid.UUID, family_id: uuid.UUID, settings: Settings
) -> tokens.TokenPair:
    refresh_id = uuid.uuid4()
    expires_at = datetime.now(UTC) + timedelta(seconds=settings.REFRESH_TOKEN_TTL_SECONDS)
    await conn.execute(INSERT_REFRESH_SQL, refresh_id, account_id, family_id, expires_at)
    subject = str(account_id)
    access = tokens.encode(
        "access", subject, settings.JWT_ACCESS_SECRET, settings.ACCESS_TOKEN_TTL_SECONDS,
        sid=str(family_id),
    )
    refresh = tokens.encode(
        "refresh", subject, settings.JWT_REFRESH_SECRET, settings.REFRESH_TOKEN_TTL_SECONDS,
        jti=str(refresh_id), sid=str(family_id),
    )
    return tokens.TokenPair(access, refresh, settings.ACCESS_TOKEN_TTL_SECONDS)


@dataclass(frozen=True, slots=True)
class Refreshed:
    """The outcome of presenting a refresh token."""

    pair: tokens.TokenPair | None
    revoked_family: uuid.UUID | None = None


async def refresh(conn: asyncpg.Connection, refresh_token: str, settings: Settings) -> Refreshed:
    """Rotate a refresh token. Reuse of a rotated token revokes its family; the caller then
    refuses the request (after this transaction has committed the revocation)."""
    claims = tokens.decode(refresh_token, "refresh", settings.JWT_REFRESH_SECRET)
    token_id = tokens.subject_uuid(claims, "jti")
    async with conn.transaction():
        row = await conn.fetchrow(CLAIM_REFRESH_SQL, token_id)
        if row is None or str(row["account_id"]) != claims["sub"]:
            raise Unauthorized("The refresh token is invalid", code="INVALID_TOKEN")
        if row["revoked_at"] is not None:
            raise Unauthorized("The refresh token has been revoked", code="TOKEN_REVOKED")
        if row["used_at"] is not None:
            await conn.execute(REVOKE_FAMILY_SQL, row["family_id"])
            return Refreshed(pair=None, revoked_family=row["family_id"])
        await conn.execute(MARK_REFRESH_USED_SQL, token_id)
        pair = await _new_pair(conn, row["account_id"], row["family_id"], settings)
    return Refreshed(pair=pair)


async def logout(
    conn: asyncpg.Connection,
    account_id: uuid.UUID,
    session_id: uuid.UUID | None,
    refresh_token: str | None,
    settings: Settings,
    origin: Origin,
) -> list[uuid.UUID]:
    """Revoke the session of the access token (and of the refresh token, if given);
    returns the revoked session ids so access tokens of those sessions can be refused."""
    families = {session_id} if session_id else set()
    if refresh_token:
        claims = tokens.decode(refresh_token, "refresh", settings.JWT_REFRESH_SECRET)
        if claims["sub"] != str(account_id):
            raise Unauthorized("The refresh token belongs to another account", code="INVALID_TOKEN")
        families.add(tokens.subject_uuid(claims, "sid"))
    async with conn.transaction():
        for family in families:
            await conn.execute(REVOKE_FAMILY_SQL, family)
        ctx = Context.for_account(account_id, origin)
        data = UserData(userId=str(account_id))
        await outbox.add(conn, ctx.event(EventType.USER_LOGOUT, data, str(account_id)))
    return list(families)


async def load(conn: asyncpg.Connection, account_id: uuid.UUID) -> asyncpg.Record:
    row = await conn.fetchrow(GET_ACCOUNT_SQL, account_id)
    if row is None:
        raise NotFound("Account not found")
    return row


async def get_account(conn: asyncpg.Connection, account_id: uuid.UUID) -> dict[str, Any]:
    return account_view(await load(conn, account_id))


def make_offload(executor: Any) -> Offload:
    """Run a CPU-bound function in the given executor without blocking the event loop."""

    async def offload(fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    return offload
