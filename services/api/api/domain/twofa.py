"""2FA for one end user: TOTP setup and confirmation, code verification (TOTP or backup code)
with lockout, disabling, backup-code regeneration and status. Emits the 2fa.* events.

`data.userId` of every event is the end user's id as the integrating app knows it (the account
id for an account acting on itself).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared import outbox
from shared.cache import Cache
from shared.config import Settings
from shared.crypto import SecretBox
from shared.errors import AppError, Conflict, NotFound, Unauthorized, ValidationFailed
from shared.events import EventType, LockoutData, TwoFactorData, TwoFactorFailedData

from api.domain import backup_codes, end_users, lockout, totp
from api.domain.context import Context
from api.domain.end_users import EndUser

TOTP_CODE = re.compile(r"^\d{6}$")
STATUS_SQL = """
SELECT f.enabled_at IS NOT NULL AS totp,
       (SELECT count(*) FROM backup_codes b
        WHERE b.owner_id = u.owner_id AND b.end_user_id = u.id AND b.used_at IS NULL) AS backup_codes
FROM end_users u
LEFT JOIN totp_factors f ON f.owner_id = u.owner_id AND f.end_user_id = u.id
WHERE u.owner_id = $1 AND u.external_id = $2
"""
ENABLED_METHODS_SQL = """
SELECT 'totp' AS type, created_at, enabled_at, last_used_at FROM totp_factors
WHERE owner_id = $1 AND end_user_id = $2 AND enabled_at IS NOT NULL
"""


@dataclass(frozen=True, slots=True)
class Deps:
    """What 2FA needs besides the connection."""

    settings: Settings
    cache: Cache
    box: SecretBox
    offload: Callable[..., Awaitable[Any]]


class InvalidSetupCode(AppError):
    status, code, message = 400, "INVALID_CODE", "The code is not valid"


def check_code_format(code: str) -> None:
    if not TOTP_CODE.match(code) and not backup_codes.looks_like_backup_code(code):
        raise ValidationFailed(
            "code must be a 6-digit TOTP code or a backup code",
            details={"fields": [{"field": "code", "message": "6 digits, or a backup code like abcd-efgh"}]},
        )


def _skew_message(steps: int) -> tuple[str, dict[str, Any]]:
    seconds = steps * totp.STEP_SECONDS
    direction = "behind" if steps < 0 else "ahead of"
    return (
        f"The code is not valid: the device clock looks about {abs(seconds)} seconds {direction} the server's",
        {"clockSkewSeconds": seconds},
    )


async def methods(conn: asyncpg.Connection, user: EndUser | None) -> list[dict[str, Any]]:
    if user is None:
        return []
    rows = await conn.fetch(ENABLED_METHODS_SQL, user.owner_id, user.id)
    return [
        {"type": r["type"], "createdAt": r["created_at"], "enabledAt": r["enabled_at"], "lastUsedAt": r["last_used_at"]}
        for r in rows
    ]


async def status(conn: asyncpg.Connection, ctx: Context, external_id: str) -> dict[str, Any]:
    """Whether 2FA is on, with which methods, and how many backup codes are left: one query."""
    row = await conn.fetchrow(STATUS_SQL, ctx.owner_id, external_id)
    enabled = ["totp"] if row and row["totp"] else []
    remaining = row["backup_codes"] if row and enabled else 0
    return {"enabled": bool(enabled), "methods": enabled, "backupCodesRemaining": remaining}


async def setup_totp(
    conn: asyncpg.Connection, deps: Deps, ctx: Context, external_id: str, label: str
) -> dict[str, Any]:
    """Begin (or restart) TOTP setup: a new pending secret, its otpauth URL and QR code."""
    async with conn.transaction():
        user = await end_users.get_or_create(conn, ctx, external_id)
        secret = await totp.start_setup(conn, deps.box, user)
    uri = totp.provisioning_uri(secret, label, deps.settings.TOTP_ISSUER)
    qr = await deps.offload(totp.qr_data_uri, uri)
    return {"secret": secret, "otpauthUrl": uri, "qrCode": qr, "pending": True}


async def verify_setup(
    conn: asyncpg.Connection, deps: Deps, ctx: Context, external_id: str, code: str
) -> dict[str, Any]:
    """Confirm setup with a first code: TOTP is enabled and 10 backup codes are issued."""
    user = await end_users.find(conn, ctx, external_id)
    factor = await totp.load(conn, deps.box, user) if user else None
    if user is None or factor is None:
        raise Conflict("Start TOTP setup first (POST /api/2fa/totp/setup)", code="SETUP_NOT_STARTED")
    if factor.enabled:
        raise Conflict("TOTP is already enabled for this user", code="ALREADY_ENABLED")
    step = totp.matching_step(factor.secret, code) if TOTP_CODE.match(code) else None
    if step is None:
        skew = totp.clock_skew_steps(factor.secret, code) if TOTP_CODE.match(code) else None
        if skew is not None:
            message, details = _skew_message(skew)
            raise InvalidSetupCode(message, details=details)
        raise InvalidSetupCode("The code does not match; scan the QR code again and retry")
    async with conn.transaction():
        if not await totp.enable(conn, user, step):
            raise Conflict("TOTP is already enabled for this user", code="ALREADY_ENABLED")
        codes = await backup_codes.regenerate(conn, deps.box, user)
        data = TwoFactorData(userId=external_id, method="totp")
        await outbox.add(conn, ctx.event(EventType.TWOFA_ENABLED, data, external_id))
    return {"enabled": True, "method": "totp", "backupCodes": codes}


async def _accept(
    conn: asyncpg.Connection, ctx: Context, user: EndUser, method: str, consume: Awaitable[bool]
) -> bool:
    """Consume the step or backup code and record `2fa.verified` in one transaction."""
    async with conn.transaction():
        if not await consume:
            return False
        data = TwoFactorData(userId=user.external_id, method=method)  # type: ignore[arg-type]
        await outbox.add(conn, ctx.event(EventType.TWOFA_VERIFIED, data, user.external_id))
    return True


async def verify(
    conn: asyncpg.Connection, deps: Deps, ctx: Context, external_id: str, code: str
) -> tuple[str, EndUser]:
    """Check a code for a user with 2FA on; returns the method that accepted it and the user,
    or raises 401 `INVALID_CODE` (after recording `2fa.failed`) or 429 when locked."""
    check_code_format(code)
    user, factor = await totp.load_with_user(conn, deps.box, ctx.owner_id, external_id)
    if user is None or factor is None or not factor.enabled:
        raise ValidationFailed("Two-factor authentication is not enabled for this user", code="TWO_FACTOR_NOT_ENABLED")
    attempt = await lockout.begin(deps.cache, deps.settings, user)
    is_totp = bool(TOTP_CODE.match(code))
    method = "totp" if is_totp else "backup_code"
    reason, details = "invalid_code", {}
    message = "The code is not valid"
    accepted = False
    if is_totp:
        step = totp.matching_step(factor.secret, code)
        if step is not None:
            accepted = await _accept(conn, ctx, user, method, totp.consume_step(conn, user, step))
            if not accepted:
                reason, message = "replayed", "This code was already used; wait for the next one"
        elif (skew := totp.clock_skew_steps(factor.secret, code)) is not None:
            reason = "clock_skew"
            message, details = _skew_message(skew)
    else:
        accepted = await _accept(conn, ctx, user, method, backup_codes.consume(conn, deps.box, user, code))
    if accepted:
        await lockout.succeeded(deps.cache, attempt)
        return method, user
    left = await lockout.failed(deps.cache, deps.settings, attempt)
    failed = TwoFactorFailedData(
        userId=user.external_id, method=method, reason=reason, attemptsRemaining=left  # type: ignore[arg-type]
    )
    events = [ctx.event(EventType.TWOFA_FAILED, failed, user.external_id)]
    if left == 0:
        locked = LockoutData(
            userId=user.external_id, scope="2fa", lockedSeconds=deps.settings.TWOFA_LOCKOUT_SECONDS
        )
        events.append(ctx.event(EventType.LOCKOUT, locked, user.external_id))
    await outbox.add_many(conn, events)
    raise Unauthorized(message, code="INVALID_CODE", details={**details, "attemptsRemaining": left})


async def disable(
    conn: asyncpg.Connection, ctx: Context, external_id: str, method_type: str
) -> None:
    """Turn a method off; with no method left, backup codes and remembered devices go too."""
    if method_type != "totp":
        raise NotFound(f"Method '{method_type}' is not enabled for this user", code="METHOD_NOT_ENABLED")
    user = await end_users.find(conn, ctx, external_id)
    async with conn.transaction():
        was_enabled = await totp.delete(conn, user) if user else False
        if not was_enabled or user is None:
            raise NotFound("TOTP is not enabled for this user", code="METHOD_NOT_ENABLED")
        if not await methods(conn, user):
            await backup_codes.delete_all(conn, user)
        await end_users.forget_devices(conn, user)
        data = TwoFactorData(userId=external_id, method="totp")
        await outbox.add(conn, ctx.event(EventType.TWOFA_DISABLED, data, external_id))


async def regenerate_backup_codes(
    conn: asyncpg.Connection, deps: Deps, ctx: Context, external_id: str
) -> dict[str, Any]:
    user = await end_users.find(conn, ctx, external_id)
    if user is None or not await methods(conn, user):
        raise ValidationFailed("Enable a 2FA method before creating backup codes", code="TWO_FACTOR_NOT_ENABLED")
    async with conn.transaction():
        codes = await backup_codes.regenerate(conn, deps.box, user)
    return {"backupCodes": codes}
