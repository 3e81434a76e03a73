"""Accounts: the guide's Quick Start, login, refresh rotation and reuse, logout, me."""

from __future__ import annotations

import asyncio

from tests.api_client import PASSWORD, create_key, error_code, login, new_account, register
from tests.ids import random_email, random_username


async def test_quick_start_register_login_and_create_api_key(client):
    """The guide's Quick Start works as written: register, login, `.data.accessToken`, `{ apiKey }`."""
    r = await client.post(
        "/api/auth/register",
        json={"email": random_email(), "username": (name := random_username()), "password": "SecurePassword123!"},
    )
    assert r.status == 201, await r.text()
    r = await client.post("/api/auth/login", json={"emailOrUsername": name, "password": "SecurePassword123!"})
    assert r.status == 200, await r.text()
    access_token = (await r.json())["data"]["accessToken"]
    r = await client.post(
        "/api/api-keys",
        headers={"Authorization": f"Bearer {access_token}"},
        json={"name": "Production App", "scopes": ["2fa:read", "2fa:write"], "rateLimit": 5000},
    )
    assert r.status == 201, await r.text()
    body = await r.json()
    assert body["apiKey"].startswith("tfa_")
    assert body["data"]["apiKey"] == body["apiKey"]
    assert body["rateLimit"] == 5000 and body["prefix"] == body["apiKey"][:12]


async def test_register_returns_the_user_without_the_password(client):
    email, username = random_email(), random_username()
    r = await client.post("/api/auth/register", json={"email": email, "username": username, "password": PASSWORD})
    body = await r.json()
    assert r.status == 201
    assert body["data"]["user"]["email"] == email
    assert body["user"]["username"] == username
    assert "password" not in str(body).lower().replace("passwordhash", "")


async def test_duplicate_email_or_username_is_409_naming_the_field(client):
    user = await register(client)
    r = await client.post("/api/auth/register", json={"email": user["email"].upper(), "username": random_username(), "password": PASSWORD})
    assert r.status == 409
    assert await error_code(r) == "EMAIL_TAKEN"
    r = await client.post("/api/auth/register", json={"email": random_email(), "username": user["username"].upper(), "password": PASSWORD})
    assert r.status == 409
    assert await error_code(r) == "USERNAME_TAKEN"


async def test_login_by_email_or_username_any_case(client):
    user = await register(client)
    for name in (user["email"], user["username"].upper()):
        data = await login(client, name)
        assert data["user"]["id"] == user["id"]
        assert data["expiresIn"] == 900


async def test_wrong_password_and_unknown_account_get_the_same_401(client):
    user = await register(client)
    r1 = await client.post("/api/auth/login", json={"emailOrUsername": user["username"], "password": "wrong-password"})
    r2 = await client.post("/api/auth/login", json={"emailOrUsername": random_username(), "password": "wrong-password"})
    assert r1.status == r2.status == 401
    assert (await r1.json())["error"] == (await r2.json())["error"]


async def test_me_answers_the_account_with_its_2fa_summary(client):
    account = await new_account(client)
    r = await client.get("/api/auth/me", headers=account.auth)
    body = await r.json()
    assert r.status == 200, body
    assert body["data"]["id"] == body["id"] == account.id
    assert body["twoFactor"] == {"enabled": False, "methods": []}
    assert set(body["data"]) >= {"id", "email", "username", "createdAt", "twoFactor"}


async def test_refresh_rotates_and_reuse_revokes_the_whole_family(client):
    account = await new_account(client)
    r = await client.post("/api/auth/refresh", json={"refreshToken": account.refresh_token})
    assert r.status == 200, await r.text()
    second = (await r.json())["data"]
    assert second["refreshToken"] != account.refresh_token

    # The first token again: reuse. It is refused, and so is the token that replaced it.
    r = await client.post("/api/auth/refresh", json={"refreshToken": account.refresh_token})
    assert r.status == 401
    assert await error_code(r) == "TOKEN_REUSED"
    r = await client.post("/api/auth/refresh", json={"refreshToken": second["refreshToken"]})
    assert r.status == 401
    assert await error_code(r) == "TOKEN_REVOKED"
    # Access tokens of the revoked session stop working too.
    r = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {second['accessToken']}"})
    assert r.status == 401


async def test_concurrent_refreshes_of_one_token_let_only_one_through(client):
    account = await new_account(client)
    results = await asyncio.gather(
        *(client.post("/api/auth/refresh", json={"refreshToken": account.refresh_token}) for _ in range(5))
    )
    assert sorted(r.status for r in results).count(200) == 1


async def test_logout_ends_the_session(client):
    account = await new_account(client)
    r = await client.post("/api/auth/logout", json={"refreshToken": account.refresh_token}, headers=account.auth)
    assert r.status == 200, await r.text()
    r = await client.get("/api/auth/me", headers=account.auth)
    assert r.status == 401
    assert await error_code(r) == "TOKEN_REVOKED"
    r = await client.post("/api/auth/refresh", json={"refreshToken": account.refresh_token})
    assert r.status == 401
    # Other sessions of the same account are untouched.
    other = await login(client, account.username)
    r = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {other['accessToken']}"})
    assert r.status == 200


async def test_login_is_throttled_per_account_with_retry_after(app_factory):
    client = await app_factory(LOGIN_MAX_FAILURES_PER_ACCOUNT=3)
    account = await new_account(client)
    for _ in range(3):
        r = await client.post("/api/auth/login", json={"emailOrUsername": account.username, "password": "nope-nope"})
        assert r.status == 401
    # Even the right password is refused now, by email as well as by username.
    r = await client.post("/api/auth/login", json={"emailOrUsername": account.email, "password": PASSWORD})
    assert r.status == 429
    assert int(r.headers["Retry-After"]) > 0
    assert await error_code(r) == "TOO_MANY_ATTEMPTS"


async def test_login_is_throttled_per_ip(app_factory):
    client = await app_factory(LOGIN_MAX_FAILURES_PER_IP=4, LOGIN_MAX_FAILURES_PER_ACCOUNT=100)
    for _ in range(4):
        r = await client.post("/api/auth/login", json={"emailOrUsername": random_username(), "password": "nope-nope"})
        assert r.status == 401
    account_elsewhere = await register(client)
    r = await client.post("/api/auth/login", json={"emailOrUsername": account_elsewhere["username"], "password": PASSWORD})
    assert r.status == 429
    assert "Retry-After" in r.headers


async def test_successful_login_resets_the_account_failure_count(app_factory):
    client = await app_factory(LOGIN_MAX_FAILURES_PER_ACCOUNT=3)
    account = await new_account(client)
    for _ in range(2):
        await client.post("/api/auth/login", json={"emailOrUsername": account.username, "password": "nope-nope"})
    await login(client, account.username)
    for _ in range(2):
        r = await client.post("/api/auth/login", json={"emailOrUsername": account.username, "password": "nope-nope"})
        assert r.status == 401


async def test_api_key_with_user_read_scope_can_read_its_owner(client):
    account = await new_account(client)
    key = await create_key(client, account, scopes=["user:read"])
    r = await client.get("/api/auth/me", headers={"X-API-Key": key["apiKey"]})
    assert r.status == 200, await r.text()
    assert (await r.json())["id"] == account.id
