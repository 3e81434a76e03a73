"""Helpers for the attack tests: API replicas that share Redis, fresh TCP connections per
request, and a look at the events the API wrote (what was really evaluated)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient

from tests.conftest import BASE_SETTINGS
from tests.ids import token


async def start_replicas(app_factory: Callable[..., Any], count: int, **overrides: Any) -> list[TestClient]:
    """`count` API instances sharing one Redis namespace (and the run's database and broker),
    as replicas behind a load balancer do."""
    shared = f"{BASE_SETTINGS['REDIS_KEY_PREFIX']}replicas-{token()}:"
    return [await app_factory(REDIS_KEY_PREFIX=shared, **overrides) for _ in range(count)]


@asynccontextmanager
async def one_connection_per_request() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that opens a new TCP connection for every request (an attacker spreading a
    burst over many connections), with no limit on how many are open at once."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def outcome(response: aiohttp.ClientResponse) -> tuple[int, str | None]:
    """The status and, for an error envelope, its code."""
    body = json.loads(await response.text())
    if response.status < 400:
        return response.status, None
    assert body["success"] is False, body
    return response.status, body["error"]["code"]


async def events_about(
    db: asyncpg.Connection, event_type: str, owner_id: str, user_id: str | None = None
) -> list[dict[str, Any]]:
    """Events of `event_type` the API wrote to its outbox for one owner (and one of its end
    users, when `user_id` is given)."""
    rows = await db.fetch(
        """SELECT convert_from(body, 'UTF8')::jsonb AS event FROM outbox
           WHERE type = $1
             AND convert_from(body, 'UTF8')::jsonb ->> 'ownerId' = $2
             AND ($3::text IS NULL OR convert_from(body, 'UTF8')::jsonb ->> 'userId' = $3)
           ORDER BY seq""",
        event_type, str(uuid.UUID(owner_id)), user_id,
    )
    return [json.loads(r["event"]) if isinstance(r["event"], str) else r["event"] for r in rows]
