"""API keys end to end: create (shown once, stored hashed), list, use by either header, scopes,
the rolling hourly limit and its headers, usage, lastUsedAt, rotate, revoke, expiry, tenancy and
bad input. Everything runs against the real PostgreSQL, Redis and RabbitMQ."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from api.domain import rate_limit
from api.keys import CACHE

from tests.api_client import create_key, error_code, new_account

RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")
ME = "/api/auth/me"  # needs `user:read` when called with a key


# --- helpers -------------------------------------------------------------------------------------




def with_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def error_of(response: Any) -> dict[str, Any]:
    body = await response.json()
    assert body["success"] is False, body
    return body["error"]


async def field_names(response: Any) -> list[str]:
    error = await error_of(response)
    return [f["field"] for f in error["details"]["fields"]]


async def poll(
    check: Callable[[], Awaitable[Any]], timeout: float = 10.0, every: float = 0.05
) -> Any:
    """Call `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        await asyncio.sleep(every)


def cursor_of(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def row_version(db: asyncpg.Connection, key_id: str) -> str:
    """The row's xmin: it changes whenever the row is written."""
    return await db.fetchval("SELECT xmin::text FROM api_keys WHERE id = $1", uuid.UUID(key_id))


async def rotate(client: Any, account: Any, key_id: str, **body: Any) -> Any:
    return await client.post(f"/api/api-keys/{key_id}/rotate", json=body, headers=account.auth)


async def last_used_in_db(db: asyncpg.Connection, key_id: str) -> datetime | None:
    return await db.fetchval("SELECT last_used_at FROM api_keys WHERE id = $1", uuid.UUID(key_id))


# --- create --------------------------------------------------------------------------------------


async def test_create_returns_the_key_once_with_its_prefix(client):
    account = await new_account(client)
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    r = await client.post(
        "/api/api-keys",
        json={"name": "Production App", "scopes": ["2fa:read", "user:read"], "rateLimit": 5000,
              "expiresAt": expires.isoformat()},
        headers=account.auth,
    )
    assert r.status == 201, await r.text()
    body = await r.json()
    key = body["apiKey"]
    assert key.startswith("tfa_") and len(key) >= 40
    assert body["data"]["apiKey"] == key
    assert body["prefix"] == body["data"]["prefix"] == key[:12]
    assert body["name"] == "Production App"
    assert sorted(body["scopes"]) == ["2fa:read", "user:read"]
    assert body["rateLimit"] == 5000
    assert parse_time(body["expiresAt"]) == expires
    assert uuid.UUID(body["id"])
    assert body["lastUsedAt"] is None and body["revokedAt"] is None and body["active"] is True


async def test_create_without_rate_limit_uses_the_default(client, settings):
    account = await new_account(client)
    created = await create_key(client, account)
    assert created["rateLimit"] == settings.API_KEY_DEFAULT_RATE_LIMIT
    assert created["expiresAt"] is None


async def test_two_keys_are_different(client):
    account = await new_account(client)
    first, second = await create_key(client, account), await create_key(client, account)
    assert first["apiKey"] != second["apiKey"] and first["id"] != second["id"]


async def test_key_is_stored_only_hashed(client, db):
    account = await new_account(client)
    created = await create_key(client, account)
    key = created["apiKey"]
    secret_part = key[12:]  # everything past the displayed prefix

    # Its SHA-256 digest is what the database holds.
    stored = await db.fetchval(
        "SELECT digest FROM api_key_secrets WHERE api_key_id = $1", uuid.UUID(created["id"])
    )
    assert bytes(stored) == hashlib.sha256(key.encode()).digest()

    # No column of any table (text or bytes, the outbox's event bodies included) holds the key.
    columns = await db.fetch(
        """
        SELECT table_name, column_name, data_type FROM information_schema.columns
        WHERE table_schema = 'public'
        """
    )
    assert columns
    for col in columns:
        table, column = f'"{col["table_name"]}"', f'"{col["column_name"]}"'
        if col["data_type"] == "bytea":
            found = await db.fetchval(
                f"SELECT count(*) FROM {table}"
                f" WHERE position(convert_to($1, 'UTF8') IN {column}) > 0",
                secret_part,
            )
        else:
            found = await db.fetchval(
                f"SELECT count(*) FROM {table} WHERE strpos({column}::text, $1) > 0", secret_part
            )
        assert found == 0, f"{col['table_name']}.{col['column_name']} contains the API key"


async def test_get_and_list_never_return_the_key(client):
    account = await new_account(client)
    created = await create_key(client, account)
    key = created["apiKey"]
    r = await client.get(f"/api/api-keys/{created['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    text = await r.text()
    body = await r.json()
    assert key[12:] not in text and "apiKey" not in body["data"]
    assert body["data"]["prefix"] == key[:12]
    assert body["id"] == created["id"]

    r = await client.get("/api/api-keys", headers=account.auth)
    assert r.status == 200, await r.text()
    text = await r.text()
    body = await r.json()
    assert key[12:] not in text
    assert [k["id"] for k in body["data"]] == [created["id"]]
    assert all("apiKey" not in k for k in body["data"])


# --- list ----------------------------------------------------------------------------------------


async def test_list_pages_with_limit_and_next_cursor_without_gaps_or_repeats(client):
    account = await new_account(client)
    created = [(await create_key(client, account, name=f"key {i}"))["id"] for i in range(7)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        r = await client.get("/api/api-keys", params=params, headers=account.auth)
        assert r.status == 200, await r.text()
        body = await r.json()
        assert isinstance(body["data"], list) and len(body["data"]) <= 3
        seen += [k["id"] for k in body["data"]]
        pages += 1
        cursor = body["nextCursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert pages == 3
    assert len(seen) == len(set(seen)) == 7
    assert seen == list(reversed(created))  # newest first


async def test_list_defaults_and_last_page_cursor_is_null(client):
    account = await new_account(client)
    await create_key(client, account)
    r = await client.get("/api/api-keys", headers=account.auth)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert len(body["data"]) == 1 and body["nextCursor"] is None
    # A limit that exactly fits the rows: no extra empty page.
    r = await client.get("/api/api-keys", params={"limit": "1"}, headers=account.auth)
    assert r.status == 200, await r.text()
    assert (await r.json())["nextCursor"] is None


@pytest.mark.parametrize("limit", ["201", "0", "-1", "abc"])
async def test_list_limit_out_of_range_is_400(client, limit):
    account = await new_account(client)
    r = await client.get("/api/api-keys", params={"limit": limit}, headers=account.auth)
    assert r.status == 400, await r.text()
    assert await error_code(r) == "VALIDATION_ERROR"
    assert "limit" in await field_names(r)


async def test_list_limit_200_is_allowed(client):
    account = await new_account(client)
    r = await client.get("/api/api-keys", params={"limit": "200"}, headers=account.auth)
    assert r.status == 200, await r.text()


@pytest.mark.parametrize(
    "cursor",
    [
        pytest.param("not-a-cursor", id="garbage"),
        pytest.param("!!!!", id="not-base64"),
        pytest.param("é", id="non-ascii"),
        pytest.param(cursor_of("just a string"), id="json-string"),
        pytest.param(cursor_of(None), id="json-null"),
        pytest.param(cursor_of({"a": 1, "b": 2}), id="json-object"),
        pytest.param(cursor_of([1, 2]), id="json-numbers"),
        pytest.param(cursor_of(["2024-01-01T00:00:00", str(uuid.uuid4())]), id="naive-time"),
        pytest.param(cursor_of(["2024-01-01T00:00:00+00:00", "not-a-uuid"]), id="bad-uuid"),
        pytest.param(
            cursor_of(["0001-01-01T00:00:00+14:00", str(uuid.uuid4())]),  # before year 1 in UTC
            id="underflow",
        ),
        pytest.param(
            cursor_of(["9999-12-31T23:59:59-14:00", str(uuid.uuid4())]),  # after year 9999 in UTC
            id="overflow",
        ),
    ],
)
async def test_list_with_a_forged_cursor_is_400_invalid_cursor(client, cursor):
    account = await new_account(client)
    r = await client.get("/api/api-keys", params={"cursor": cursor}, headers=account.auth)
    assert r.status == 400, await r.text()
    assert await error_code(r) == "INVALID_CURSOR"


# --- using a key ---------------------------------------------------------------------------------


async def test_key_works_in_the_x_api_key_header(client):
    account = await new_account(client)
    key = (await create_key(client, account, scopes=["user:read"]))["apiKey"]
    r = await client.get(ME, headers=with_key(key))
    assert r.status == 200, await r.text()
    assert (await r.json())["id"] == account.id


async def test_key_works_as_a_bearer_token(client):
    account = await new_account(client)
    key = (await create_key(client, account, scopes=["user:read"]))["apiKey"]
    r = await client.get(ME, headers=bearer(key))
    assert r.status == 200, await r.text()
    assert (await r.json())["data"]["id"] == account.id


async def test_wildcard_scope_grants_everything(client):
    account = await new_account(client)
    key = (await create_key(client, account, scopes=["*"]))["apiKey"]
    r = await client.get(ME, headers=with_key(key))
    assert r.status == 200, await r.text()


async def test_key_without_the_scope_is_403_insufficient_scope(client):
    account = await new_account(client)
    key = (await create_key(client, account, scopes=["2fa:read", "2fa:write"]))["apiKey"]
    for headers in (with_key(key), bearer(key)):
        r = await client.get(ME, headers=headers)
        assert r.status == 403, await r.text()
        error = await error_of(r)
        assert error["code"] == "INSUFFICIENT_SCOPE"
        assert error["details"]["requiredScope"] == "user:read"


async def test_key_on_api_key_routes_is_403_user_token_required(client):
    account = await new_account(client)
    created = await create_key(client, account, scopes=["*"])
    key, key_id = created["apiKey"], created["id"]
    calls = [
        ("GET", "/api/api-keys", None),
        ("POST", "/api/api-keys", {"name": "from a key", "scopes": ["*"]}),
        ("GET", f"/api/api-keys/{key_id}", None),
        ("GET", f"/api/api-keys/{key_id}/usage", None),
        ("POST", f"/api/api-keys/{key_id}/rotate", {}),
        ("DELETE", f"/api/api-keys/{key_id}", None),
    ]
    for method, path, body in calls:
        for headers in (with_key(key), bearer(key)):
            r = await client.request(method, path, json=body, headers=headers)
            assert r.status == 403, f"{method} {path}: {await r.text()}"
            assert await error_code(r) == "USER_TOKEN_REQUIRED"
    # None of it happened: still one key, still active, still the same secret.
    r = await client.get("/api/api-keys", headers=account.auth)
    assert r.status == 200, await r.text()
    keys = (await r.json())["data"]
    assert [k["id"] for k in keys] == [key_id] and keys[0]["active"] is True
    r = await client.get(ME, headers=with_key(key))
    assert r.status == 200, await r.text()


async def test_unknown_key_is_401(client):
    r = await client.get(ME, headers=with_key("tfa_" + "x" * 43))
    assert r.status == 401, await r.text()
    assert await error_code(r) == "INVALID_API_KEY"


# --- rate limit ----------------------------------------------------------------------------------


async def test_rate_limit_allows_the_limit_then_429_with_retry_after(client):
    account = await new_account(client)
    key = (await create_key(client, account, scopes=["user:read"], rateLimit=3))["apiKey"]
    remaining = []
    for _ in range(3):
        r = await client.get(ME, headers=with_key(key))
        assert r.status == 200, await r.text()
        assert r.headers["X-RateLimit-Limit"] == "3"
        remaining.append(int(r.headers["X-RateLimit-Remaining"]))
    assert remaining == [2, 1, 0]

    for headers in (with_key(key), bearer(key)):
        r = await client.get(ME, headers=headers)
        assert r.status == 429, await r.text()
        error = await error_of(r)
        assert error["code"] == "RATE_LIMITED"
        retry_after = int(r.headers["Retry-After"])
        assert 0 < retry_after <= 3600
        assert error["details"]["retryAfter"] == retry_after
        assert r.headers["X-RateLimit-Limit"] == "3"
        assert r.headers["X-RateLimit-Remaining"] == "0"


async def test_every_key_authenticated_response_carries_rate_limit_headers(client):
    account = await new_account(client)
    key = (await create_key(client, account, scopes=["2fa:read"], rateLimit=2))["apiKey"]
    # Authenticated, then refused for its scope (an error): headers all the same.
    statuses = []
    for _ in range(3):
        r = await client.get(ME, headers=with_key(key))
        statuses.append(r.status)
        for name in RATE_HEADERS:
            assert name in r.headers, f"{name} missing on a {r.status}: {await r.text()}"
        assert r.headers["X-RateLimit-Limit"] == "2"
        reset = int(r.headers["X-RateLimit-Reset"])
        assert time.time() < reset <= time.time() + 3600 + 60
    assert statuses == [403, 403, 429]


async def test_rate_limit_is_per_key(client):
    account = await new_account(client)
    first = (await create_key(client, account, scopes=["user:read"], rateLimit=1))["apiKey"]
    second = (await create_key(client, account, scopes=["user:read"], rateLimit=1))["apiKey"]
    r = await client.get(ME, headers=with_key(first))
    assert r.status == 200, await r.text()
    r = await client.get(ME, headers=with_key(first))
    assert r.status == 429, await r.text()
    r = await client.get(ME, headers=with_key(second))
    assert r.status == 200, await r.text()


async def test_user_token_responses_have_no_rate_limit_headers(client):
    account = await new_account(client)
    r = await client.get(ME, headers=account.auth)
    assert r.status == 200, await r.text()
    assert not any(name in r.headers for name in RATE_HEADERS)


# --- usage ---------------------------------------------------------------------------------------


async def test_usage_of_a_new_key_is_24_empty_hours(client):
    account = await new_account(client)
    created = await create_key(client, account)
    r = await client.get(f"/api/api-keys/{created['id']}/usage", headers=account.auth)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["total"] == 0 and body["rejected"] == 0
    assert len(body["hours"]) == 24
    hours = [parse_time(h["hour"]) for h in body["hours"]]
    assert all(b - a == timedelta(hours=1) for a, b in zip(hours, hours[1:], strict=False))
    now = datetime.now(UTC)
    assert hours[-1] <= now < hours[-1] + timedelta(hours=1, seconds=5)
    assert all(h["requests"] == 0 and h["rejected"] == 0 for h in body["hours"])


async def test_usage_counts_requests_and_rejections(client):
    account = await new_account(client)
    created = await create_key(client, account, scopes=["user:read"], rateLimit=3)
    key = created["apiKey"]
    statuses = [(await client.get(ME, headers=with_key(key))).status for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    r = await client.get(f"/api/api-keys/{created['id']}/usage", headers=account.auth)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["data"]["total"] == body["total"]
    # `requests` are the calls let through, `rejected` the ones refused with 429.
    assert body["total"] == 3 and body["rejected"] == 2
    assert len(body["hours"]) == 24
    assert sum(h["requests"] for h in body["hours"]) == 3
    assert sum(h["rejected"] for h in body["hours"]) == 2
    # All of it happened in the current hour (or the one before, at an hour boundary).
    assert sum(h["requests"] + h["rejected"] for h in body["hours"][-2:]) == 5


# --- lastUsedAt ----------------------------------------------------------------------------------


async def test_last_used_at_shows_at_once_without_a_database_write(app_factory, db):
    client = await app_factory(API_KEY_LAST_USED_FLUSH_SECONDS=3600)
    account = await new_account(client)
    created = await create_key(client, account, scopes=["user:read"])
    before = datetime.now(UTC)
    r = await client.get(ME, headers=with_key(created["apiKey"]))
    assert r.status == 200, await r.text()

    assert await last_used_in_db(db, created["id"]) is None  # no write per request

    r = await client.get(f"/api/api-keys/{created['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    last_used = parse_time((await r.json())["lastUsedAt"])
    assert before - timedelta(seconds=1) <= last_used <= datetime.now(UTC) + timedelta(seconds=1)
    r = await client.get("/api/api-keys", headers=account.auth)
    assert r.status == 200, await r.text()
    assert parse_time((await r.json())["data"][0]["lastUsedAt"]) == last_used


async def test_last_used_at_is_flushed_to_the_database_periodically(app_factory, db):
    client = await app_factory(API_KEY_LAST_USED_FLUSH_SECONDS=0.2)
    account = await new_account(client)
    created = await create_key(client, account, scopes=["user:read"])
    r = await client.get(ME, headers=with_key(created["apiKey"]))
    assert r.status == 200, await r.text()
    r = await client.get(f"/api/api-keys/{created['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    shown = parse_time((await r.json())["lastUsedAt"])

    async def flushed() -> datetime | None:
        return await last_used_in_db(db, created["id"])

    stored = await poll(flushed)
    assert abs((stored - shown).total_seconds()) < 0.001


async def test_flusher_does_not_rewrite_keys_whose_last_use_is_unchanged(app_factory, db):
    client = await app_factory(API_KEY_LAST_USED_FLUSH_SECONDS=0.2)
    account = await new_account(client)
    first = await create_key(client, account, scopes=["user:read"])
    second = await create_key(client, account, scopes=["user:read"])
    r = await client.get(ME, headers=with_key(first["apiKey"]))
    assert r.status == 200, await r.text()
    await poll(lambda: last_used_in_db(db, first["id"]))
    version = await row_version(db, first["id"])

    # Use the second key and wait for a later flush to store it: the first row was left alone.
    r = await client.get(ME, headers=with_key(second["apiKey"]))
    assert r.status == 200, await r.text()
    await poll(lambda: last_used_in_db(db, second["id"]))
    assert await row_version(db, first["id"]) == version


# --- rotate --------------------------------------------------------------------------------------


async def test_rotate_gives_a_new_key_that_works_at_once(client):
    account = await new_account(client)
    created = await create_key(client, account, scopes=["user:read"])
    r = await client.post(f"/api/api-keys/{created['id']}/rotate", json={}, headers=account.auth)
    assert r.status == 200, await r.text()
    rotated = await r.json()
    new_key = rotated["apiKey"]
    assert rotated["data"]["apiKey"] == new_key
    assert new_key.startswith("tfa_") and new_key != created["apiKey"]
    assert rotated["id"] == created["id"] and rotated["prefix"] == new_key[:12]
    assert rotated["rotatedAt"] is not None
    r = await client.get(ME, headers=with_key(new_key))
    assert r.status == 200, await r.text()
    # The list shows the new prefix, never either key.
    r = await client.get(f"/api/api-keys/{created['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    text = await r.text()
    assert (await r.json())["prefix"] == new_key[:12]
    assert new_key[12:] not in text and created["apiKey"][12:] not in text


async def test_rotate_keeps_the_old_key_working_during_the_grace_period(client):
    account = await new_account(client)
    created = await create_key(client, account, scopes=["user:read"])
    r = await rotate(client, account, created["id"], gracePeriodSeconds=600)
    assert r.status == 200, await r.text()
    rotated = await r.json()
    grace_ends = parse_time(rotated["previousKeyExpiresAt"])
    assert abs((grace_ends - datetime.now(UTC)).total_seconds() - 600) < 30
    for key in (created["apiKey"], rotated["apiKey"]):
        r = await client.get(ME, headers=with_key(key))
        assert r.status == 200, await r.text()


async def test_old_key_is_refused_once_the_grace_period_ends(client):
    account = await new_account(client)
    created = await create_key(client, account, scopes=["user:read"])
    r = await rotate(client, account, created["id"], gracePeriodSeconds=1)
    assert r.status == 200, await r.text()
    new_key = (await r.json())["apiKey"]

    async def refused() -> bool:
        r = await client.get(ME, headers=with_key(created["apiKey"]))
        if r.status == 200:
            return False
        assert r.status == 401, await r.text()
        assert await error_code(r) == "API_KEY_ROTATED"
        return True

    await poll(refused, timeout=10, every=0.2)
    r = await client.get(ME, headers=with_key(new_key))
    assert r.status == 200, await r.text()


async def test_rotate_with_zero_grace_refuses_the_old_key_at_once(client):
    account = await new_account(client)
    created = await create_key(client, account, scopes=["user:read"])
    r = await rotate(client, account, created["id"], gracePeriodSeconds=0)
    assert r.status == 200, await r.text()
    new_key = (await r.json())["apiKey"]
    for headers in (with_key(created["apiKey"]), bearer(created["apiKey"])):
        r = await client.get(ME, headers=headers)
        assert r.status == 401, await r.text()
        assert await error_code(r) == "API_KEY_ROTATED"
    r = await client.get(ME, headers=with_key(new_key))
    assert r.status == 200, await r.text()


async def test_rotating_twice_keeps_only_the_latest_grace(client):
    account = await new_account(client)
    created = await create_key(client, account, scopes=["user:read"])
    path = f"/api/api-keys/{created['id']}/rotate"
    r = await client.post(path, json={"gracePeriodSeconds": 0}, headers=account.auth)
    assert r.status == 200, await r.text()
    second = (await r.json())["apiKey"]
    r = await client.post(path, json={"gracePeriodSeconds": 600}, headers=account.auth)
    assert r.status == 200, await r.text()
    third = (await r.json())["apiKey"]
    # The first key's grace already ended; a later, longer grace does not revive it.
    r = await client.get(ME, headers=with_key(created["apiKey"]))
    assert r.status == 401, await r.text()
    for key in (second, third):
        r = await client.get(ME, headers=with_key(key))
        assert r.status == 200, await r.text()


@pytest.mark.parametrize("grace", [-1, 7 * 24 * 3600 + 1, "soon", 1.5])
async def test_rotate_with_a_bad_grace_period_is_400(client, grace):
    account = await new_account(client)
    created = await create_key(client, account)
    r = await rotate(client, account, created["id"], gracePeriodSeconds=grace)
    assert r.status == 400, await r.text()
    assert "gracePeriodSeconds" in await field_names(r)


async def test_rotate_of_a_revoked_key_is_refused(client):
    account = await new_account(client)
    created = await create_key(client, account, scopes=["user:read"])
    r = await client.delete(f"/api/api-keys/{created['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    r = await client.post(f"/api/api-keys/{created['id']}/rotate", json={}, headers=account.auth)
    # A state conflict, not a credential problem: the caller's own token is fine.
    assert r.status == 409, await r.text()
    assert await error_code(r) == "API_KEY_REVOKED"
    r = await client.get(f"/api/api-keys/{created['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    assert (await r.json())["prefix"] == created["prefix"]  # no new secret was issued
    r = await client.get(ME, headers=with_key(created["apiKey"]))
    assert r.status == 401, await r.text()


async def test_rotate_of_an_expired_key_is_refused(client, db):
    account = await new_account(client)
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    created = await create_key(client, account, scopes=["user:read"], expiresAt=future)
    await db.execute(
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1",
        uuid.UUID(created["id"]),
    )
    # Rotating would hand out a key that is refused at once: refuse the rotation instead.
    r = await rotate(client, account, created["id"])
    assert r.status == 409, await r.text()
    assert await error_code(r) == "API_KEY_EXPIRED"
    r = await client.get(f"/api/api-keys/{created['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    assert (await r.json())["prefix"] == created["prefix"]


# --- revoke --------------------------------------------------------------------------------------


async def test_revoked_key_is_refused_at_once(client):
    account = await new_account(client)
    created = await create_key(client, account, scopes=["user:read"])
    r = await client.get(ME, headers=with_key(created["apiKey"]))
    assert r.status == 200, await r.text()
    r = await client.delete(f"/api/api-keys/{created['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["revokedAt"] is not None and body["active"] is False
    for headers in (with_key(created["apiKey"]), bearer(created["apiKey"])):
        r = await client.get(ME, headers=headers)
        assert r.status == 401, await r.text()
        assert await error_code(r) == "API_KEY_REVOKED"
    r = await client.get(f"/api/api-keys/{created['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    assert (await r.json())["active"] is False


async def test_revoke_also_refuses_a_key_still_in_its_rotation_grace(client):
    account = await new_account(client)
    created = await create_key(client, account, scopes=["user:read"])
    r = await rotate(client, account, created["id"], gracePeriodSeconds=600)
    assert r.status == 200, await r.text()
    new_key = (await r.json())["apiKey"]
    r = await client.delete(f"/api/api-keys/{created['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    for key in (created["apiKey"], new_key):
        r = await client.get(ME, headers=with_key(key))
        assert r.status == 401, await r.text()
        assert await error_code(r) == "API_KEY_REVOKED"


async def test_revoking_twice_keeps_the_first_revocation_and_emits_one_event(client, db):
    account = await new_account(client)
    created = await create_key(client, account)
    r = await client.delete(f"/api/api-keys/{created['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    revoked_at = (await r.json())["revokedAt"]
    r = await client.delete(f"/api/api-keys/{created['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    assert (await r.json())["revokedAt"] == revoked_at
    events = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE type = 'apikey.revoked'"
        " AND position(convert_to($1, 'UTF8') IN body) > 0",
        created["id"],
    )
    assert events == 1


# --- expiry --------------------------------------------------------------------------------------


async def test_create_with_expires_at_in_the_past_is_400_naming_expires_at(client):
    account = await new_account(client)
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    r = await client.post(
        "/api/api-keys",
        json={"name": "old", "scopes": ["2fa:read"], "expiresAt": past},
        headers=account.auth,
    )
    assert r.status == 400, await r.text()
    assert await error_code(r) == "VALIDATION_ERROR"
    assert await field_names(r) == ["expiresAt"]


@pytest.mark.parametrize(
    "value",
    ["2030-01-01T00:00:00", "tomorrow", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"],
    ids=["naive", "words", "after-9999-in-utc", "before-year-1-in-utc"],
)
async def test_create_with_a_bad_expires_at_is_400(client, value):
    account = await new_account(client)
    r = await client.post(
        "/api/api-keys",
        json={"name": "k", "scopes": ["2fa:read"], "expiresAt": value},
        headers=account.auth,
    )
    assert r.status == 400, await r.text()
    assert await error_code(r) == "VALIDATION_ERROR"
    assert await field_names(r) == ["expiresAt"]


async def test_key_past_its_expiry_is_401_api_key_expired(client):
    account = await new_account(client)
    expires = datetime.now(UTC) + timedelta(seconds=1.5)
    created = await create_key(client, account, scopes=["user:read"], expiresAt=expires.isoformat())
    # Used while valid, so the API process also remembers it (API_KEY_CACHE_SECONDS).
    r = await client.get(ME, headers=with_key(created["apiKey"]))
    assert r.status == 200, await r.text()
    await asyncio.sleep((expires - datetime.now(UTC)).total_seconds() + 0.1)
    for headers in (with_key(created["apiKey"]), bearer(created["apiKey"])):
        r = await client.get(ME, headers=headers)
        assert r.status == 401, await r.text()
        assert await error_code(r) == "API_KEY_EXPIRED"
    r = await client.get(f"/api/api-keys/{created['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    assert (await r.json())["active"] is False


# --- tenancy -------------------------------------------------------------------------------------


async def test_another_account_cannot_touch_a_key(client):
    owner, other = await new_account(client), await new_account(client)
    created = await create_key(client, owner, scopes=["user:read"])
    key_id = created["id"]
    calls = [
        ("GET", f"/api/api-keys/{key_id}", None),
        ("GET", f"/api/api-keys/{key_id}/usage", None),
        ("POST", f"/api/api-keys/{key_id}/rotate", {"gracePeriodSeconds": 0}),
        ("DELETE", f"/api/api-keys/{key_id}", None),
    ]
    for method, path, body in calls:
        r = await client.request(method, path, json=body, headers=other.auth)
        assert r.status == 404, f"{method} {path}: {await r.text()}"
        assert await error_code(r) == "NOT_FOUND"
        assert created["apiKey"][12:] not in await r.text()

    r = await client.get("/api/api-keys", headers=other.auth)
    assert r.status == 200, await r.text()
    assert (await r.json())["data"] == []

    # The owner's key is untouched: not rotated, not revoked, still working.
    r = await client.get(ME, headers=with_key(created["apiKey"]))
    assert r.status == 200, await r.text()
    assert (await r.json())["id"] == owner.id
    r = await client.get(f"/api/api-keys/{key_id}", headers=owner.auth)
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["active"] is True and body["rotatedAt"] is None
    assert body["prefix"] == created["prefix"]


async def test_an_unknown_key_id_is_404(client):
    account = await new_account(client)
    r = await client.get(f"/api/api-keys/{uuid.uuid4()}", headers=account.auth)
    assert r.status == 404, await r.text()
    assert await error_code(r) == "NOT_FOUND"


@pytest.mark.parametrize(
    "key_id", ["not-a-uuid", "123", "x" * 300, "%00", "%C3%A9", "0" * 31, "' OR 1=1 --"]
)
async def test_ids_that_are_not_uuids_are_404(client, key_id):
    account = await new_account(client)
    calls = [
        ("GET", f"/api/api-keys/{key_id}", None),
        ("GET", f"/api/api-keys/{key_id}/usage", None),
        ("POST", f"/api/api-keys/{key_id}/rotate", {}),
        ("DELETE", f"/api/api-keys/{key_id}", None),
    ]
    for method, path, body in calls:
        r = await client.request(method, path, json=body, headers=account.auth)
        assert r.status == 404, f"{method} {path}: {await r.text()}"
        assert await error_code(r) == "NOT_FOUND"


# --- bad input on create -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "k", "scopes": ["2fa:read", "admin"]}, "scopes"),
        ({"name": "k", "scopes": []}, "scopes"),
        ({"name": "k", "scopes": "2fa:read"}, "scopes"),
        ({"name": "k"}, "scopes"),
        ({"name": "k", "scopes": ["2fa:read"], "ownerId": str(uuid.uuid4())}, "ownerId"),
        ({"name": "x" * 10_000, "scopes": ["2fa:read"]}, "name"),
        ({"name": "x" * 101, "scopes": ["2fa:read"]}, "name"),
        ({"name": "   ", "scopes": ["2fa:read"]}, "name"),
        ({"scopes": ["2fa:read"]}, "name"),
        ({"name": 5, "scopes": ["2fa:read"]}, "name"),
        ({"name": "k", "scopes": ["2fa:read"], "rateLimit": 0}, "rateLimit"),
        ({"name": "k", "scopes": ["2fa:read"], "rateLimit": -5}, "rateLimit"),
        ({"name": "k", "scopes": ["2fa:read"], "rateLimit": "abc"}, "rateLimit"),
        ({"name": "k", "scopes": ["2fa:read"], "rateLimit": 1.5}, "rateLimit"),
        ({"name": "k", "scopes": ["2fa:read"], "rateLimit": 10**30}, "rateLimit"),
    ],
    ids=["unknown-scope", "empty-scopes", "scopes-not-list", "no-scopes", "unknown-field",
         "name-10000", "name-101", "blank-name", "no-name", "name-not-string", "rate-0",
         "rate-negative", "rate-abc", "rate-fraction", "rate-huge"],
)
async def test_create_with_bad_input_is_400_naming_the_field(client, body, field):
    account = await new_account(client)
    r = await client.post("/api/api-keys", json=body, headers=account.auth)
    assert r.status == 400, await r.text()
    error = await error_of(r)
    assert error["code"] == "VALIDATION_ERROR"
    assert field in [f["field"] for f in error["details"]["fields"]], error
    # Nothing was created.
    r = await client.get("/api/api-keys", headers=account.auth)
    assert r.status == 200, await r.text()
    assert (await r.json())["data"] == []


@pytest.mark.parametrize("raw", [b"{", b"[]", b'"k"', b"null"])
async def test_create_with_a_malformed_body_is_400(client, raw):
    account = await new_account(client)
    r = await client.post(
        "/api/api-keys", data=raw, headers={**account.auth, "Content-Type": "application/json"}
    )
    assert r.status == 400, await r.text()
    assert await error_code(r) == "VALIDATION_ERROR"


async def test_api_key_routes_need_a_credential(client):
    r = await client.post("/api/api-keys", json={"name": "k", "scopes": ["2fa:read"]})
    assert r.status == 401, await r.text()
    r = await client.get("/api/api-keys")
    assert r.status == 401, await r.text()



async def test_flushed_last_used_stamps_leave_redis_and_get_still_shows_them(app_factory, db):
    """Once stored in the database, a key's stamp is dropped from Redis (the hash stays small)."""
    client = await app_factory(API_KEY_LAST_USED_FLUSH_SECONDS=0.2)
    cache = client.server.app[CACHE]
    account = await new_account(client)
    key = await create_key(client, account, scopes=["user:read"])
    r = await client.get(ME, headers=with_key(key["apiKey"]))
    assert r.status == 200, await r.text()
    await poll(lambda: last_used_in_db(db, key["id"]))

    async def gone() -> bool:
        return await cache.client.hget(rate_limit.last_used_key(cache), key["id"]) is None

    await poll(gone)
    r = await client.get(f"/api/api-keys/{key['id']}", headers=account.auth)
    assert (await r.json())["lastUsedAt"] is not None


async def test_rate_limit_above_api_key_max_rate_limit_is_400(app_factory):
    """API_KEY_MAX_RATE_LIMIT caps what a key may be given; the cap itself is allowed."""
    client = await app_factory(API_KEY_MAX_RATE_LIMIT=500)
    account = await new_account(client)
    r = await client.post("/api/api-keys", json={"name": "k", "scopes": ["2fa:read"], "rateLimit": 501},
                          headers=account.auth)
    assert r.status == 400, await r.text()
    assert await error_code(r) == "VALIDATION_ERROR"
    assert [f["field"] for f in (await r.json())["error"]["details"]["fields"]] == ["rateLimit"]
    assert (await create_key(client, account, rateLimit=500))["rateLimit"] == 500


# --- replicas remember keys (API_KEY_CACHE_SECONDS) ----------------------------------------------


async def test_a_revoke_or_rotation_reaches_every_replica_at_once(app_factory, settings):
    # Two API replicas sharing Redis, as in production; both have just used (and so remember)
    # the keys. A revoke or a rotation without grace on one is obeyed by the other at once,
    # although the other would otherwise trust what it remembers for a minute.
    shared = {"REDIS_KEY_PREFIX": f"{settings.REDIS_KEY_PREFIX}replicas-{uuid.uuid4().hex[:6]}:"}
    one = await app_factory(API_KEY_CACHE_SECONDS=60, **shared)
    two = await app_factory(API_KEY_CACHE_SECONDS=60, **shared)
    account = await new_account(one)
    revoked = await create_key(one, account, scopes=["user:read"])
    rotated = await create_key(one, account, scopes=["user:read"])
    for replica in (one, two):
        for key in (revoked, rotated):
            r = await replica.get(ME, headers=with_key(key["apiKey"]))
            assert r.status == 200, await r.text()

    r = await one.delete(f"/api/api-keys/{revoked['id']}", headers=account.auth)
    assert r.status == 200, await r.text()
    r = await rotate(one, account, rotated["id"], gracePeriodSeconds=0)
    assert r.status == 200, await r.text()
    new_key = (await r.json())["data"]["apiKey"]

    r = await two.get(ME, headers=with_key(revoked["apiKey"]))
    assert r.status == 401 and await error_code(r) == "API_KEY_REVOKED"
    r = await two.get(ME, headers=with_key(rotated["apiKey"]))
    assert r.status == 401 and await error_code(r) == "API_KEY_ROTATED"
    r = await two.get(ME, headers=with_key(new_key))
    assert r.status == 200, await r.text()
