"""/auth: register, login, refresh, logout, me."""

from __future__ import annotations

import uuid

from aiohttp import web

from shared.envelope import ok
from shared.errors import Unauthorized

from api.domain import accounts, devices, end_users, rate_limit, sessions, tokens, twofa
from api.domain.context import Context
from api.keys import CACHE, DUMMY_HASH, OFFLOAD, POOL, SETTINGS
from api.parsing import parse_json
from api.schemas import LoginBody, LogoutBody, RefreshBody, RegisterBody
from api.views.common import context_of, origin_of, principal_of


async def register(request: web.Request) -> web.Response:
    body = await parse_json(request, RegisterBody)
    async with request.app[POOL].acquire() as conn:
        user = await accounts.register(
            conn,
            email=str(body.email),
            username=body.username,
            password=body.password,
            settings=request.app[SETTINGS],
            offload=request.app[OFFLOAD],
            origin=origin_of(request),
        )
    return ok({"user": user}, status=201)


async def login(request: web.Request) -> web.Response:
    body = await parse_json(request, LoginBody)
    settings, cache = request.app[SETTINGS], request.app[CACHE]
    origin = origin_of(request)
    async with request.app[POOL].acquire() as conn:
        account = await accounts.find_for_login(conn, body.emailOrUsername)
        # Per account when it exists (whichever of email or username is typed), else per name.
        who = f"id:{account['id']}" if account else f"name:{body.emailOrUsername.lower()}"
        throttle = {
            cache.key("login-fail", who): settings.LOGIN_MAX_FAILURES_PER_ACCOUNT,
            cache.key("login-fail", "ip", origin.ip or "unknown"): settings.LOGIN_MAX_FAILURES_PER_IP,
        }
        # Checked before bcrypt runs, so a password-guessing flood costs no CPU once throttled.
        await rate_limit.check_failures(cache, throttle, "Too many failed logins; try again later")
        valid = await accounts.verify_password(
            account, body.password, request.app[DUMMY_HASH], request.app[OFFLOAD]
        )
        if not valid or account is None:
            await rate_limit.record_failure(
                cache, list(throttle), settings.LOGIN_FAILURE_WINDOW_SECONDS
            )
            raise Unauthorized("Invalid email/username or password", code="INVALID_CREDENTIALS")
        await rate_limit.clear_failures(cache, next(iter(throttle)))
        ctx = Context.for_account(account["id"], origin)
        user = await end_users.find(conn, ctx, str(account["id"]))
        methods = [m["type"] for m in await twofa.methods(conn, user)]
        if methods and not (user and devices.is_valid(settings, body.deviceToken, user)):
            temp = tokens.encode(
                "temp", str(account["id"]), settings.JWT_ACCESS_SECRET, tokens.TEMP_TTL_SECONDS,
                jti=uuid.uuid4().hex,
            )
            return ok({"requiresTwoFactor": True, "tempToken": temp, "methods": methods,
                       "expiresIn": tokens.TEMP_TTL_SECONDS})
        result = await accounts.issue_session(
            conn, account, settings, origin, method="device" if methods else "password"
        )
    return ok(result)


async def refresh(request: web.Request) -> web.Response:
    body = await parse_json(request, RefreshBody)
    settings = request.app[SETTINGS]
    async with request.app[POOL].acquire() as conn:
        outcome = await accounts.refresh(conn, body.refreshToken, settings)
    if outcome.pair is None:
        assert outcome.revoked_family is not None
        await sessions.revoke(
            request.app[CACHE], [outcome.revoked_family], settings.ACCESS_TOKEN_TTL_SECONDS
        )
        raise Unauthorized(
            "This refresh token was already used; the session has been revoked",
            code="TOKEN_REUSED",
        )
    return ok(outcome.pair.as_payload())


async def logout(request: web.Request) -> web.Response:
    body = await parse_json(request, LogoutBody)
    principal = principal_of(request)
    settings = request.app[SETTINGS]
    async with request.app[POOL].acquire() as conn:
        ended = await accounts.logout(
            conn, principal.owner_id, principal.session_id, body.refreshToken, settings,
            origin_of(request),
        )
    await sessions.revoke(request.app[CACHE], ended, settings.ACCESS_TOKEN_TTL_SECONDS)
    return ok({"loggedOut": True})


async def me(request: web.Request) -> web.Response:
    principal = principal_of(request)
    async with request.app[POOL].acquire() as conn:
        account = await accounts.get_account(conn, principal.owner_id)
        summary = await twofa.status(conn, context_of(request), str(principal.owner_id))
    return ok({**account, "twoFactor": {"enabled": summary["enabled"], "methods": summary["methods"]}})
