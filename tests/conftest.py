"""Per-run isolation on the real services: this run's own database, Redis key prefix and broker
names, created at the start and removed at the end (CI shares these servers with other runs)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from shared import db as shared_db
from shared.broker import Topology
from shared.cache import create_cache
from shared.config import Settings
from shared.migrate import prepare

from api.app import create_app

RUN_ID = secrets.token_hex(4)
RETRY_DELAYS = [1, 2]


def _secret() -> str:
    return secrets.token_hex(32)


BASE_SETTINGS: dict[str, Any] = {
    "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/tfa_test_{RUN_ID}",
    "REDIS_KEY_PREFIX": f"tfa-test:{RUN_ID}:",
    "BROKER_PREFIX": f"test-{RUN_ID}.",
    "JWT_ACCESS_SECRET": _secret(),
    "JWT_REFRESH_SECRET": _secret(),
    "DEVICE_TOKEN_SECRET": _secret(),
    "ENCRYPTION_KEY": _secret(),
    "BCRYPT_ROUNDS": 4,
    "PORT": 0,
    "HOST": "127.0.0.1",
    "NOTIFIER_HEALTH_PORT": 0,
    "WEBHOOK_DISPATCHER_HEALTH_PORT": 0,
    "AUDIT_HEALTH_PORT": 0,
    "OUTBOX_POLL_SECONDS": 0.2,
    "WEBHOOK_RETRY_DELAYS": RETRY_DELAYS,
    "CONSUMER_RETRY_DELAYS": RETRY_DELAYS,
    "WEBHOOK_ALLOW_PRIVATE_URLS": True,
    "LOG_LEVEL": "WARNING",
    "DB_POOL_MIN": 1,
    "DB_POOL_MAX": 10,
}


def make_settings(**overrides: Any) -> Settings:
    """Settings for this run, ignoring any `.env` in the working tree."""
    return Settings(_env_file=None, **{**BASE_SETTINGS, **overrides})  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def settings() -> Settings:
    return make_settings()


@pytest_asyncio.fixture(scope="session", autouse=True)
async def run_resources(settings: Settings) -> AsyncIterator[None]:
    """Create this run's database; afterwards drop it, its Redis keys and its broker objects."""
    await prepare(settings)
    yield
    await remove_resources(settings, EXTRA_QUEUES)


async def remove_resources(settings: Settings, extra_queues: list[str] | None = None) -> None:
    """Drop the database, Redis keys and broker objects that `settings` name."""
    await shared_db.drop_database(settings.DATABASE_URL)
    async with create_cache(settings) as cache:
        keys = [k async for k in cache.client.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}*", count=1000)]
        if keys:
            await cache.client.delete(*keys)
    topology = Topology(settings.BROKER_PREFIX)
    connection = await aio_pika.connect(settings.RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        for name in topology.all_queues(RETRY_DELAYS) + (extra_queues or []):
            await channel.queue_delete(name)
        await channel.exchange_delete(topology.exchange)


# Queues that tests declare themselves (e.g. to watch the exchange); removed with the run.
EXTRA_QUEUES: list[str] = []


@pytest_asyncio.fixture
async def db(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to this run's database (with the services' codecs), to look behind
    the API."""
    conn = await asyncpg.connect(settings.DATABASE_URL)
    await shared_db.init_connection(conn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest_asyncio.fixture
async def app_factory() -> AsyncIterator[Callable[..., Any]]:
    """Start API instances (with optional setting overrides) on free ports; stopped afterwards."""
    clients: list[TestClient] = []

    async def start(**overrides: Any) -> TestClient:
        # Each instance gets its own Redis namespace (counters, limits) unless a test shares one
        # on purpose, e.g. to run two replicas side by side.
        overrides.setdefault("REDIS_KEY_PREFIX", f"{BASE_SETTINGS['REDIS_KEY_PREFIX']}{secrets.token_hex(3)}:")
        app = create_app(make_settings(**overrides))
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest_asyncio.fixture
async def client(app_factory: Callable[..., Any]) -> TestClient:
    """A running API on a free port with this run's settings."""
    return await app_factory()
