"""2FA for one end user: TOTP, SMS and email setup and confirmation, login challenges by SMS or
email, code verification (TOTP, a pending SMS/email code, or a backup code) with lockout,
disabling, backup-code regeneration and status. Emits the 2fa.* events, and hands codes to the
notifier as notification commands in the same transaction as the state they belong to.

`data.userId` of every event is the end user's id as the integrating app knows it (the account
id for an account acting on itself).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared import notifications, outbox
from shared.cache import Cache
from shared.config import Settings
from shared.crypto import SecretBox
from shared.db import Queries, Statement
from shared.errors import AppError, Conflict, NotFound, RateLimited, Unauthorized, ValidationFailed
from shared.events import (
    Event,
    EventType,
    LockoutData,
    NotificationData,
    SendRefusedData,
    TwoFactorData,
    TwoFactorFailedData,
)

from api.domain import backup_codes, contacts, end_users, lockout, totp
from api.domain import one_time_codes as otc
from api.domain.contacts import Destination, Kind
from api.domain.context import Context
from api.domain.end_users import EndUser

TOTP_CODE = re.compile(r"^\d{6}$")
STATUS_SQL = """
SELECT f.enabled_at IS NOT NULL AS totp,
       ARRAY(SELECT c.kind FROM contact_factors c
             WHERE c.owner_id = u.owner_id AND c.end_user_id = u.id AND c.enabled_at IS NOT NULL
             ORDER BY c.kind) AS contacts,
       (SELECT count(*) FROM backup_codes b
        WHERE b.owner_id = u.owner_id AND b.end_user_id = u.id AND b.used_at IS NULL) AS backup_codes
FROM end_users u
LEFT JOIN totp_factors f ON f.owner_id = u.owner_id AND f.end_user_id = u.id
WHERE u.owner_id = $1 AND u.external_id = $2
"""
ENABLED_METHODS_SQL = """
SELECT 'totp' AS type, created_at, enabled_at, last_used_at, NULL AS masked FROM totp_factors
WHERE owner_id = $1 AND end_user_id = $2 AND enabled_at IS NOT NULL
UNION ALL
SELECT kind, created_at, enabled_at, last_used_at, masked FROM contact_factors
WHERE owner_id = $1 AND end_user_id = $2 AND enabled_at IS NOT NULL
ORDER BY enabled_at
"""
DESTINATION_FIELD = {"sms": "phoneNumber", "email": "email"}
NOTIFICATION_TYPES = {"sms": EventType.NOTIFICATION_SMS, "email": EventType.NOTIFICATION_EMAIL}


@dataclass(frozen=True, slots=True)
class Deps:
    """What 2FA needs besides the connection."""

    settings: Settings
    cache: Cache
    box: SecretBox
    offload: Callable[..., Awaitable[Any]]
    # Records a wrong code's events, committed whatever becomes of the caller's transaction.
    failures: outbox.Appender


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
    """The enabled methods, oldest first; SMS and email show their masked destination."""
    if user is None:
        return []
    rows = await conn.fetch(ENABLED_METHODS_SQL, user.owner_id, user.id)
    found = []
    for r in rows:
        method = {"type": r["type"], "createdAt": r["created_at"], "enabledAt": r["enabled_at"], "lastUsedAt": r["last_used_at"]}
        if r["type"] in DESTINATION_FIELD:
            method[DESTINATION_FIELD[r["type"]]] = r["masked"]
        found.append(method)
    return found


async def status(conn: asyncpg.Connection, ctx: Context, external_id: str) -> dict[str, Any]:
    """Whether 2FA is on, with which methods, and how many backup codes are left: one query."""
    row = await conn.fetchrow(STATUS_SQL, ctx.owner_id, external_id)
    enabled = (["totp"] if row["totp"] else []) + list(row["contacts"]) if row else []
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


async def _accept(db: Queries, ctx: Context, user: EndUser, method: str, consume: Statement) -> bool:
    """Consume the step or code and record `2fa.verified`, atomically (one statement); False
    when `consume` found it used already (or, for SMS/email, the method no longer enabled: a
    code sent before it was turned off does not count)."""
    data = TwoFactorData(userId=user.external_id, method=method)  # type: ignore[arg-type]
    return await outbox.add_if(db, consume, ctx.event(EventType.TWOFA_VERIFIED, data, user.external_id))


async def verify(
    db: Queries,
    deps: Deps,
    ctx: Context,
    external_id: str,
    code: str,
    early: lockout.Early | None = None,
) -> tuple[str, EndUser]:
    """Check a code for a user with 2FA on; returns the method that accepted it and the user,
    or raises 401 `INVALID_CODE` (after recording `2fa.failed`) or 429 when locked.

    `db` is best the pool: each statement then borrows a connection only while it runs.
    `early`: the attempt, if it was counted with the API key's rate limit."""
    check_code_format(code)
    counted = early.attempt() if early is not None else None  # 429 here when locked
    user, factor, contact_kinds = await totp.load_with_user(db, deps.box, ctx.owner_id, external_id)
    totp_on = factor is not None and factor.enabled
    if user is None or not (totp_on or contact_kinds):
        if counted is not None:
            await lockout.clear(deps.cache, counted)
        raise ValidationFailed("Two-factor authentication is not enabled for this user", code="TWO_FACTOR_NOT_ENABLED")
    attempt = counted or await lockout.begin(deps.cache, deps.settings, ctx.owner_id, external_id)
    is_six_digits = bool(TOTP_CODE.match(code))
    if not is_six_digits:
        method = "backup_code"
    else:
        method = "totp" if totp_on or not contact_kinds else contact_kinds[0]
    reason, details = "invalid_code", {}
    message = "The code is not valid"
    accepted = False
    if is_six_digits and totp_on:
        assert factor is not None
        step = totp.matching_step(factor.secret, code)
        if step is not None:
            accepted = await _accept(db, ctx, user, method, totp.consume_step(user, step))
            if not accepted:
                reason, message = "replayed", "This code was already used; wait for the next one"
        elif (skew := totp.clock_skew_steps(factor.secret, code)) is not None:
            reason = "clock_skew"
            message, details = _skew_message(skew)
    if is_six_digits and not accepted and reason == "invalid_code" and contact_kinds:
        # A login code is only ever sent for an enabled method, so what waits in Redis is enough.
        for kind in await otc.pending_channels(deps.cache, user, "login"):
            checked = await otc.check(deps.cache, deps.box, user, kind, "login", code)
            if checked.status == "none":
                continue
            method = kind
            if checked.status == "right":
                accepted = await _accept(db, ctx, user, kind, contacts.mark_used(user, kind))
                break
            if checked.status == "exhausted":
                reason, message = "expired", "This code has had too many wrong tries; ask for a new one"
    elif not is_six_digits:
        accepted = await _accept(db, ctx, user, method, backup_codes.consume(deps.box, user, code))
    if accepted:
        await lockout.clear(deps.cache, attempt)
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
    await deps.failures.add_many(events)
    raise Unauthorized(message, code="INVALID_CODE", details={**details, "attemptsRemaining": left})


async def disable(
    conn: asyncpg.Connection, ctx: Context, external_id: str, method_type: str
) -> None:
    """Turn a method off; with no method left, backup codes and remembered devices go too."""
    if method_type not in ("totp", "sms", "email"):
        raise NotFound(f"Method '{method_type}' is not enabled for this user", code="METHOD_NOT_ENABLED")
    user = await end_users.find(conn, ctx, external_id)
    async with conn.transaction():
        if user is None:
            was_enabled = False
        elif method_type == "totp":
            was_enabled = await totp.delete(conn, user)
        else:
            was_enabled = await contacts.delete(conn, user, method_type)  # type: ignore[arg-type]
        if not was_enabled or user is None:
            raise NotFound(f"{method_type} is not enabled for this user", code="METHOD_NOT_ENABLED")
        if not await methods(conn, user):
            await backup_codes.delete_all(conn, user)
        await end_users.forget_devices(conn, user)
        data = TwoFactorData(userId=external_id, method=method_type)  # type: ignore[arg-type]
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


# --- SMS and email ----------------------------------------------------------------------------


def _provider_ready(settings: Settings, kind: Kind) -> None:
    ready = settings.twilio_configured if kind == "sms" else settings.email_configured
    if not ready:
        provider = "Twilio (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_PHONE_NUMBER)" if kind == "sms" else "SMTP (EMAIL_HOST)"
        raise ValidationFailed(
            f"{kind.upper() if kind == 'sms' else 'Email'} codes are not available: this service has no {provider} configured",
            code="METHOD_UNAVAILABLE",
        )


async def _refuse(conn: asyncpg.Connection, ctx: Context, user: EndUser, kind: Kind, masked: str,
                  reason: str, error: AppError) -> AppError:
    """Record a refused send (an audited `security.send_refused`), then hand back the error."""
    data = SendRefusedData(userId=user.external_id, channel=kind, reason=reason, to=masked)
    await outbox.add(conn, ctx.event(EventType.SEND_REFUSED, data, user.external_id))
    return error


async def _guard_send(
    conn: asyncpg.Connection,
    deps: Deps,
    ctx: Context,
    user: EndUser,
    kind: Kind,
    destination: Destination,
    purpose: otc.Purpose,
) -> None:
    """The SMS pumping guard: cooldown, allowed countries, daily caps. Refusals are 4xx and
    audited; a send that passes is counted."""
    settings = deps.settings
    await otc.refuse_if_too_soon(deps.cache, user, kind, purpose)
    allowed = settings.SMS_ALLOWED_COUNTRIES
    if kind == "sms" and allowed and destination.calling_code not in allowed:
        raise await _refuse(conn, ctx, user, kind, destination.masked, "country_not_allowed", ValidationFailed(
            f"SMS cannot be sent to +{destination.calling_code} numbers from this service",
            code="SMS_COUNTRY_NOT_ALLOWED",
            details={"fields": [{"field": "phoneNumber", "message": "this country is not allowed"}]},
        ))
    caps = otc.daily_caps(deps.cache, settings, user, kind, destination.value)
    hit = await otc.count_send(caps, deps.cache)
    if hit is not None:
        raise await _refuse(conn, ctx, user, kind, destination.masked, f"daily_limit_{hit.name.replace(' ', '_')}", RateLimited(
            otc.seconds_to_midnight(),
            f"The daily limit of {hit.limit} codes per {hit.name} is reached; try again tomorrow",
            code="DAILY_LIMIT_REACHED",
            details={"limit": hit.limit, "per": hit.name},
        ))


def _command(deps: Deps, ctx: Context, user: EndUser, kind: Kind, destination: Destination,
             issued: otc.Issued, purpose: otc.Purpose) -> Event:
    """The notification command carrying the sealed code to the notifier."""
    command_id = uuid.uuid4()
    data = NotificationData(
        to=destination.value,
        purpose=purpose,
        sealedCode=notifications.seal_code(deps.box, command_id, issued.code),
        expiresInMinutes=max(deps.settings.CONTACT_CODE_TTL_SECONDS // 60, 1),
    )
    return Event.build(
        NOTIFICATION_TYPES[kind], data, id=command_id, ownerId=ctx.owner_id, userId=user.external_id,
        actor=ctx.actor, ip=ctx.origin.ip, userAgent=ctx.origin.user_agent,
    )


async def setup_contact(
    conn: asyncpg.Connection, deps: Deps, ctx: Context, external_id: str, kind: Kind, destination: Destination
) -> dict[str, Any]:
    """Begin (or restart) SMS/email setup: a code is sent to the destination, pending until
    confirmed with `verify_contact_setup`."""
    _provider_ready(deps.settings, kind)
    user = await end_users.get_or_create(conn, ctx, external_id)
    current = await contacts.load(conn, deps.box, user, kind)
    if current is not None and current.enabled:
        raise Conflict(f"{kind} is already enabled for this user", code="ALREADY_ENABLED")
    await _guard_send(conn, deps, ctx, user, kind, destination, "setup")
    issued = await otc.issue(deps.cache, deps.box, deps.settings, user, kind, "setup")
    async with conn.transaction():
        if not await contacts.start(conn, deps.box, user, kind, destination):
            raise Conflict(f"{kind} is already enabled for this user", code="ALREADY_ENABLED")
        await outbox.add(conn, _command(deps, ctx, user, kind, destination, issued, "setup"))
    return {"pending": True, "method": kind, "to": destination.masked, "expiresAt": issued.expires_at}


def _code_error(checked: otc.Checked) -> AppError:
    if checked.status == "exhausted":
        return RateLimited(
            checked.retry_after, "Too many wrong codes; wait for this one to expire and ask again",
            code="TOO_MANY_ATTEMPTS",
        )
    if checked.status == "none":
        return Conflict("No code is pending (it expired or was used); ask for a new one", code="CODE_EXPIRED")
    return InvalidSetupCode(
        "The code does not match", details={"attemptsRemaining": checked.attempts_left}
    )


async def verify_contact_setup(
    conn: asyncpg.Connection, deps: Deps, ctx: Context, external_id: str, kind: Kind, code: str
) -> dict[str, Any]:
    """Confirm the destination with the code sent to it: the method is enabled. The user's
    first method also gets 10 backup codes."""
    user = await end_users.find(conn, ctx, external_id)
    factor = await contacts.load(conn, deps.box, user, kind) if user else None
    if user is None or factor is None:
        raise Conflict(f"Start {kind} setup first (POST /api/2fa/{kind}/setup)", code="SETUP_NOT_STARTED")
    if factor.enabled:
        raise Conflict(f"{kind} is already enabled for this user", code="ALREADY_ENABLED")
    checked = await otc.check(deps.cache, deps.box, user, kind, "setup", code)
    if checked.status != "right":
        raise _code_error(checked)
    result: dict[str, Any] = {"enabled": True, "method": kind}
    async with conn.transaction():
        first = not await methods(conn, user)
        if not await contacts.enable(conn, user, kind):
            raise Conflict(f"{kind} is already enabled for this user", code="ALREADY_ENABLED")
        if first:
            result["backupCodes"] = await backup_codes.regenerate(conn, deps.box, user)
        data = TwoFactorData(userId=external_id, method=kind)
        await outbox.add(conn, ctx.event(EventType.TWOFA_ENABLED, data, external_id))
    return result


async def challenge(
    conn: asyncpg.Connection, deps: Deps, ctx: Context, external_id: str, kind: Kind
) -> dict[str, Any]:
    """Send a login code by SMS or email to the user's confirmed destination."""
    user = await end_users.find(conn, ctx, external_id)
    factor = await contacts.load(conn, deps.box, user, kind) if user else None
    if user is None or factor is None or not factor.enabled:
        raise ValidationFailed(f"{kind} is not enabled for this user", code="METHOD_NOT_ENABLED",
                               details={"fields": [{"field": "method", "message": "not enabled for this user"}]})
    _provider_ready(deps.settings, kind)
    await _guard_send(conn, deps, ctx, user, kind, factor.destination, "login")
    issued = await otc.issue(deps.cache, deps.box, deps.settings, user, kind, "login")
    await outbox.add(conn, _command(deps, ctx, user, kind, factor.destination, issued, "login"))
    return {"sent": True, "method": kind, "to": factor.destination.masked, "expiresAt": issued.expires_at}
