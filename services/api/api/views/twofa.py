"""/2fa: TOTP setup and confirmation, verification (login completion or API-key check),
methods, disabling, backup codes, status. With a user token the caller acts on itself; with an
API key every call names the owner's end user by `userId`."""

from __future__ import annotations

from aiohttp import web

from shared.envelope import ok
from shared.errors import Unauthorized, ValidationFailed

from api.auth import TEMP_TOKEN_OR_KEY, authenticate
from api.domain import accounts, devices, end_users, lockout, tokens, twofa
from api.domain.context import Context
from api.keys import CACHE, DUMMY_HASH, OFFLOAD, POOL, PRINCIPAL, SETTINGS, TWOFA
from api.parsing import parse_json, parse_query
from api.domain import contacts
from api.schemas import (
    ChallengeBody,
    CodeBody,
    DisableMethodBody,
    EmailSetupBody,
    SmsSetupBody,
    UserBody,
    UserQuery,
    VerifyBody,
)
from api.views.common import context_of, origin_of, principal_of


def _field_error(field: str, message: str, code: str = "VALIDATION_ERROR") -> ValidationFailed:
    return ValidationFailed(message, code=code, details={"fields": [{"field": field, "message": message}]})


def subject_of(request: web.Request, user_id: str | None) -> str:
    """The end user a call is about: the caller itself (user token) or `userId` (API key)."""
    principal = principal_of(request)
    if principal.kind == "user":
        if user_id is not None:
            raise _field_error("userId", "userId is not allowed with a user token: it acts on the caller")
        return str(principal.owner_id)
    if not user_id:
        raise _field_error("userId", "userId is required when calling with an API key")
    return user_id


async def setup_totp(request: web.Request) -> web.Response:
    body = await parse_json(request, UserBody)
    external_id = subject_of(request, body.userId)
    ctx = context_of(request)
    async with request.app[POOL].acquire() as conn:
        if principal_of(request).kind == "user":
            label = (await accounts.get_account(conn, ctx.owner_id))["email"]
        else:
            label = external_id
        result = await twofa.setup_totp(conn, request.app[TWOFA], ctx, external_id, label)
    return ok(result)


async def verify_totp_setup(request: web.Request) -> web.Response:
    body = await parse_json(request, CodeBody)
    external_id = subject_of(request, body.userId)
    async with request.app[POOL].acquire() as conn:
        result = await twofa.verify_setup(conn, request.app[TWOFA], context_of(request), external_id, body.code)
    return ok(result)


async def setup_sms(request: web.Request) -> web.Response:
    body = await parse_json(request, SmsSetupBody)
    external_id = subject_of(request, body.userId)
    destination = contacts.phone(body.phoneNumber)
    async with request.app[POOL].acquire() as conn:
        result = await twofa.setup_contact(
            conn, request.app[TWOFA], context_of(request), external_id, "sms", destination
        )
    return ok(result)


async def setup_email(request: web.Request) -> web.Response:
    body = await parse_json(request, EmailSetupBody)
    external_id = subject_of(request, body.userId)
    destination = contacts.email(str(body.email))
    async with request.app[POOL].acquire() as conn:
        result = await twofa.setup_contact(
            conn, request.app[TWOFA], context_of(request), external_id, "email", destination
        )
    return ok(result)


async def _verify_contact_setup(request: web.Request, kind: contacts.Kind) -> web.Response:
    body = await parse_json(request, CodeBody)
    external_id = subject_of(request, body.userId)
    async with request.app[POOL].acquire() as conn:
        result = await twofa.verify_contact_setup(
            conn, request.app[TWOFA], context_of(request), external_id, kind, body.code
        )
    return ok(result)


async def verify_sms_setup(request: web.Request) -> web.Response:
    return await _verify_contact_setup(request, "sms")


async def verify_email_setup(request: web.Request) -> web.Response:
    return await _verify_contact_setup(request, "email")


async def challenge(request: web.Request) -> web.Response:
    """Send a login code: with `tempToken` for the account logging in (that token alone
    authorises it), or with an API key for its end user `userId`."""
    body = await parse_json(request, ChallengeBody)
    if body.tempToken is not None:
        if body.userId is not None:
            raise _field_error("userId", "userId is not allowed with a tempToken")
        claims = tokens.decode(body.tempToken, "temp", request.app[SETTINGS].JWT_ACCESS_SECRET)
        account_id = tokens.subject_uuid(claims)
        ctx, external_id = Context.for_account(account_id, origin_of(request)), str(account_id)
    else:
        request[PRINCIPAL] = await authenticate(request, TEMP_TOKEN_OR_KEY)
        external_id = subject_of(request, body.userId)
        ctx = context_of(request)
    async with request.app[POOL].acquire() as conn:
        result = await twofa.challenge(conn, request.app[TWOFA], ctx, external_id, body.method)
    return ok(result)


async def verify(request: web.Request) -> web.Response:
    """With `tempToken`: finish a login (that token alone authorises it; other credentials are
    ignored). Otherwise: an API key (or user token) checks a user's code."""
    body = await parse_json(request, VerifyBody)
    twofa.check_code_format(body.code)
    if body.tempToken is not None:
        return await _complete_login(request, body)
    # With an API key, the lockout attempt is counted in the key's rate-limit round trip.
    early = lockout.Early(request.app[CACHE], request.app[SETTINGS], body.userId) if body.userId else None
    request[PRINCIPAL] = await authenticate(request, TEMP_TOKEN_OR_KEY, early)
    external_id = subject_of(request, body.userId)
    ctx = context_of(request)
    method, _ = await twofa.verify(request.app[POOL], request.app[TWOFA], ctx, external_id, body.code, early)
    return ok({"verified": True, "method": method, "userId": external_id})


async def _complete_login(request: web.Request, body: VerifyBody) -> web.Response:
    settings, cache = request.app[SETTINGS], request.app[CACHE]
    if body.userId is not None:
        raise _field_error("userId", "userId is not allowed with a tempToken")
    assert body.tempToken is not None
    claims = tokens.decode(body.tempToken, "temp", settings.JWT_ACCESS_SECRET)
    account_id = tokens.subject_uuid(claims)
    used_key = cache.key("temp-token", "used", claims.get("jti", ""))
    if await cache.client.exists(used_key):
        raise Unauthorized("This login step was already completed; log in again", code="TOKEN_USED")
    origin = origin_of(request)
    ctx = Context.for_account(account_id, origin)
    method, user = await twofa.verify(request.app[POOL], request.app[TWOFA], ctx, str(account_id), body.code)
    # One completion per temp token, also when two right codes race.
    if not await cache.client.set(used_key, 1, nx=True, ex=tokens.TEMP_TTL_SECONDS + 60):
        raise Unauthorized("This login step was already completed; log in again", code="TOKEN_USED")
    async with request.app[POOL].acquire() as conn:
        account = await accounts.load(conn, account_id)
        result = await accounts.issue_session(conn, account, settings, origin, method="2fa", two_factor_method=method)
    if body.rememberDevice:
        result["deviceToken"] = devices.issue(settings, user)
    return ok(result)


async def list_methods(request: web.Request) -> web.Response:
    query = parse_query(request, UserQuery)
    external_id = subject_of(request, query.userId)
    async with request.app[POOL].acquire() as conn:
        user = await end_users.find(conn, context_of(request), external_id)
        found = await twofa.methods(conn, user)
    return ok(found)


async def disable_method(request: web.Request) -> web.Response:
    body = await parse_json(request, DisableMethodBody)
    query = parse_query(request, UserQuery)
    if body.userId and query.userId and body.userId != query.userId:
        raise _field_error("userId", "userId differs between the query and the body")
    external_id = subject_of(request, body.userId or query.userId)
    ctx = context_of(request)
    async with request.app[POOL].acquire() as conn:
        if principal_of(request).kind == "user":
            await _confirm_owner(request, conn, ctx, body)
        await twofa.disable(conn, ctx, external_id, request.match_info["type"])
    return ok({"disabled": True, "method": request.match_info["type"]})


async def _confirm_owner(request: web.Request, conn, ctx, body: DisableMethodBody) -> None:  # type: ignore[no-untyped-def]
    """An account turning its own 2FA off proves it is really the owner: password or code."""
    if body.code:
        await twofa.verify(conn, request.app[TWOFA], ctx, str(ctx.owner_id), body.code)
        return
    if body.password:
        account = await accounts.load(conn, ctx.owner_id)
        if await accounts.verify_password(account, body.password, request.app[DUMMY_HASH], request.app[OFFLOAD]):
            return
        raise Unauthorized("The password is not correct", code="INVALID_CREDENTIALS")
    raise _field_error("password", "Send your password or a current code to turn 2FA off")


async def regenerate_backup_codes(request: web.Request) -> web.Response:
    body = await parse_json(request, UserBody)
    external_id = subject_of(request, body.userId)
    async with request.app[POOL].acquire() as conn:
        result = await twofa.regenerate_backup_codes(conn, request.app[TWOFA], context_of(request), external_id)
    return ok(result)


async def get_status(request: web.Request) -> web.Response:
    query = parse_query(request, UserQuery)
    external_id = subject_of(request, query.userId)
    async with request.app[POOL].acquire() as conn:
        result = await twofa.status(conn, context_of(request), external_id)
    return ok(result)
