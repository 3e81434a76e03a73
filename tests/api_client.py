"""Helpers over the public REST API, for tests: each returns the response's `data`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp.test_utils import TestClient

from tests.ids import random_email, random_username

PASSWORD = "SecurePassword123!"


@dataclass
class Account:
    id: str
    email: str
    username: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def register(client: TestClient, **fields: Any) -> dict[str, Any]:
    body = {"email": random_email(), "username": random_username(), "password": PASSWORD, **fields}
    r = await client.post("/api/auth/register", json=body)
    assert r.status == 201, await r.text()
    return (await r.json())["data"]["user"]


async def login(client: TestClient, name: str, password: str = PASSWORD) -> dict[str, Any]:
    r = await client.post("/api/auth/login", json={"emailOrUsername": name, "password": password})
    assert r.status == 200, await r.text()
    return (await r.json())["data"]


async def new_account(client: TestClient) -> Account:
    """Register and log in a fresh account."""
    user = await register(client)
    tokens = await login(client, user["username"])
    return Account(
        user["id"], user["email"], user["username"], PASSWORD,
        tokens["accessToken"], tokens["refreshToken"],
    )


async def create_key(client: TestClient, account: Account, **fields: Any) -> dict[str, Any]:
    body = {"name": "Test key", "scopes": ["2fa:read", "2fa:write"], **fields}
    r = await client.post("/api/api-keys", json=body, headers=account.auth)
    assert r.status == 201, await r.text()
    return (await r.json())["data"]


async def error_code(response: Any) -> str:
    body = await response.json()
    assert body["success"] is False, body
    return body["error"]["code"]
