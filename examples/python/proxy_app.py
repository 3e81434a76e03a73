"""The guide's Pattern 1 (proxy integration), corrected, as an aiohttp app: your backend checks
the password, asks the 2FA service whether *this* user has 2FA, and only creates a session after
the code is verified. Dicts stand in for "your database" and session store: use real ones (with
expiry) in production.

Usage: TFA_API_KEY=tfa_... [TFA_BASE_URL=http://localhost:3001/api] [PORT=3000] python proxy_app.py
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import time
import uuid
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler

from tfa_client import TwoFactorAuthClient, TwoFactorError

PENDING_LOGIN_SECONDS = 5 * 60


@dataclass
class Store:
    users: dict[str, dict] = field(default_factory=dict)  # email -> {id, email, salt, hash}
    sessions: dict[str, str] = field(default_factory=dict)  # session token -> user id
    # login token -> (user id, expiry): the password was right, the code is still to come
    pending: dict[str, tuple[str, float]] = field(default_factory=dict)


STORE = web.AppKey("store", Store)
TFA = web.AppKey("tfa", TwoFactorAuthClient)
routes = web.RouteTableDef()


def hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)


# Unknown emails are checked against a dummy hash too, so that the response time does not tell
# an attacker which emails have accounts.
DUMMY_SALT = secrets.token_bytes(16)
DUMMY_HASH = hash_password("no such user", DUMMY_SALT)


async def check_password(user: dict | None, password: str) -> bool:
    salt, stored = (user["salt"], user["hash"]) if user else (DUMMY_SALT, DUMMY_HASH)
    given = await asyncio.to_thread(hash_password, password, salt)
    return hmac.compare_digest(given, stored) and user is not None


def error(status: int, message: str, **extra: str | None) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def json_object(request: web.Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "The body must be a JSON object"}',
                                 content_type="application/json")
    return body


def create_session(store: Store, user_id: str) -> str:
    token = secrets.token_urlsafe(32)
    store.sessions[token] = user_id
    return token


@routes.post("/api/auth/register")
async def register(request: web.Request) -> web.Response:
    body = await json_object(request)
    email, password = body.get("email"), body.get("password")
    if not isinstance(email, str) or not isinstance(password, str) or len(password) < 8:
        return error(400, "email and a password of at least 8 characters are required")
    store = request.app[STORE]
    if email in store.users:
        return error(409, "This email is already registered")
    salt = secrets.token_bytes(16)
    user = {"id": str(uuid.uuid4()), "email": email, "salt": salt,
            "hash": await asyncio.to_thread(hash_password, password, salt)}
    store.users[email] = user
    return web.json_response({"user": {"id": user["id"], "email": email}}, status=201)


@routes.post("/api/auth/login")
async def login(request: web.Request) -> web.Response:
    body = await json_object(request)
    store, tfa = request.app[STORE], request.app[TFA]

    # 1. Verify the user in your database.
    user = store.users.get(str(body.get("email")))
    if not await check_password(user, str(body.get("password"))) or user is None:
        return error(401, "Invalid credentials")

    # 2. Does this user have 2FA? The service needs to know which user (the guide omits userId).
    #    requests blocks, so it runs in a thread, off the event loop.
    methods = await asyncio.to_thread(tfa.methods, user["id"])
    if methods:
        # Remember on the server who passed the password step. The guide's verify-2fa trusted a
        # userId sent back by the browser, which lets anyone skip the password of a known user.
        login_token = secrets.token_urlsafe(32)
        store.pending[login_token] = (user["id"], time.monotonic() + PENDING_LOGIN_SECONDS)
        return web.json_response({"requiresTwoFactor": True, "loginToken": login_token,
                                  "methods": [m["type"] for m in methods]})

    # 3. No 2FA: create the session. Never send back the stored user (it holds the password hash).
    return web.json_response({"sessionToken": create_session(store, user["id"]),
                              "user": {"id": user["id"], "email": user["email"]}})


@routes.post("/api/auth/verify-2fa")
async def verify_2fa(request: web.Request) -> web.Response:
    body = await json_object(request)
    store, tfa = request.app[STORE], request.app[TFA]
    login_token = str(body.get("loginToken"))
    user_id, expires_at = store.pending.get(login_token, (None, 0.0))
    if user_id is None or expires_at < time.monotonic():
        return error(401, "Log in with your password first")
    try:
        await asyncio.to_thread(tfa.verify_code, user_id, str(body.get("code")))
    except TwoFactorError as refused:
        if refused.status == 429:  # 5 wrong codes in a row lock the user: say for how long
            response = error(429, "Too many wrong codes: try again later")
            response.headers["Retry-After"] = str(refused.retry_after)
            return response
        if refused.status in (400, 401):
            return error(401, "2FA verification failed", code=refused.code)
        raise
    store.pending.pop(login_token, None)
    return web.json_response({"sessionToken": create_session(store, user_id)})


@web.middleware
async def fail_closed(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The 2FA service unreachable or refusing the API key: never log the user in."""
    try:
        return await handler(request)
    except (TwoFactorError, OSError) as failure:  # requests' connection errors are OSErrors
        print(f"2FA service error: {failure!r}", flush=True)
        return error(502, "Two-factor authentication is unavailable, try again later")


def create_app(api_key: str, base_url: str) -> web.Application:
    app = web.Application(middlewares=[fail_closed])
    app[STORE] = Store()
    app[TFA] = TwoFactorAuthClient(api_key, base_url)
    app.add_routes(routes)
    return app


if __name__ == "__main__":
    base_url = os.getenv("TFA_BASE_URL", "http://localhost:3001/api")
    app = create_app(os.environ["TFA_API_KEY"], base_url)
    web.run_app(app, port=int(os.getenv("PORT", "3000")))
