"""Composition root of the API: `create_app(settings)` is used by `__main__` and by the tests.

Resources are `cleanup_ctx` generators stored under typed keys; each registers its health ping
when it is created. The outbox relay runs in every replica (it is safe to: SKIP LOCKED).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import bcrypt
import structlog
from aiohttp import web

from shared import broker, db
from shared.cache import create_cache
from shared.config import Settings
from shared.crypto import SecretBox
from shared.health import Health
from shared.outbox import Appender, Relay

from api import openapi
from api.auth import auth_middleware
from api.deadlines import Deadlines
from api.domain import api_keys, rate_limit, twofa
from api.domain.accounts import make_offload
from api.keys import (
    ACCESS,
    CACHE,
    CPU_POOL,
    DEADLINES,
    DUMMY_HASH,
    HEALTH,
    KNOWN_KEYS,
    OFFLOAD,
    OPENAPI,
    POOL,
    PUBLISHER,
    RELAY,
    SECRET_BOX,
    SETTINGS,
    TWOFA,
)
from api.middleware import core_middleware, cors_middleware
from api.routes import register

log = structlog.get_logger(__name__)


# The CPU pool's threads run at a lower priority than the event loop: during a login storm
# bcrypt still gets every core the loop leaves idle, but a health probe or a verify request never
# waits behind it for a core.
CPU_POOL_NICENESS = 10


def _lower_priority() -> None:
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):  # not Linux: the pool runs at the loop's priority
        niceness = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, niceness + CPU_POOL_NICENESS))


async def cpu_pool_ctx(app: web.Application) -> AsyncIterator[None]:
    executor = ThreadPoolExecutor(
        max_workers=os.cpu_count() or 2, thread_name_prefix="cpu", initializer=_lower_priority
    )
    app[CPU_POOL] = executor
    app[OFFLOAD] = make_offload(executor)
    rounds = app[SETTINGS].BCRYPT_ROUNDS
    # Compared against when the account does not exist, so timing does not reveal that.
    app[DUMMY_HASH] = await app[OFFLOAD](bcrypt.hashpw, b"dummy password", bcrypt.gensalt(rounds))
    yield
    executor.shutdown(wait=False, cancel_futures=True)


async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
    async with db.create_pool(app[SETTINGS]) as pool:
        app[POOL] = pool
        app[HEALTH].register("database", lambda: db.ping(pool))
        yield


async def cache_ctx(app: web.Application) -> AsyncIterator[None]:
    async with create_cache(app[SETTINGS]) as cache:
        app[CACHE] = cache
        app[HEALTH].register("redis", cache.ping)
        yield


async def twofa_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    app[SECRET_BOX] = SecretBox(settings.ENCRYPTION_KEY)
    failures = Appender(app[POOL])
    failures.start()
    app[TWOFA] = twofa.Deps(settings, app[CACHE], app[SECRET_BOX], app[OFFLOAD], failures)
    yield
    await failures.stop()


async def broker_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with broker.connect(settings, "api") as connection:
        publisher = broker.Publisher(connection, broker.Topology(settings.BROKER_PREFIX))
        app[PUBLISHER] = publisher
        app[HEALTH].register("broker", publisher.ping)
        yield


RESTART_SECONDS = 1.0
RELAY_PIPELINE = 4  # outbox batches in flight at once


async def _supervise(coro_factory, name: str) -> None:  # type: ignore[no-untyped-def]
    """Run a background loop, and run it again should it ever end by an error it did not expect
    (a relay that died would leave every event waiting while readiness still said 200)."""
    while True:
        try:
            await coro_factory()
        except Exception:
            log.exception("background task crashed; restarting it", task=name)
        await asyncio.sleep(RESTART_SECONDS)


async def _run_forever(coro_factory, name: str) -> AsyncIterator[None]:  # type: ignore[no-untyped-def]
    task = asyncio.create_task(_supervise(coro_factory, name), name=name)
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def relay_ctx(app: web.Application) -> AsyncIterator[None]:
    # Its own connections (LISTEN, and one per batch in flight): under load the relay never
    # waits in line behind requests for the shared pool, so events keep flowing.
    async with db.create_pool(app[SETTINGS], size=1 + RELAY_PIPELINE) as pool:
        settings = app[SETTINGS]
        relay = Relay(
            pool,
            app[PUBLISHER],
            poll_seconds=settings.OUTBOX_POLL_SECONDS,
            gather_seconds=settings.OUTBOX_GATHER_SECONDS,
            pipeline=RELAY_PIPELINE,
        )
        app[RELAY] = relay
        async for _ in _run_forever(relay.run, "outbox-relay"):
            yield


async def flush_last_used(app: web.Application) -> None:
    """Copy the `lastUsedAt` stamps that key requests leave in Redis into the database."""
    cache = app[CACHE]
    stamps = await cache.client.hgetall(rate_limit.last_used_key(cache))
    values = {
        uuid.UUID(k.decode()): datetime.fromtimestamp(float(v), UTC) for k, v in stamps.items()
    }
    async with app[POOL].acquire() as conn:
        await api_keys.flush_last_used(conn, values)
    await rate_limit.forget_flushed_last_used(cache, stamps)


async def last_used_ctx(app: web.Application) -> AsyncIterator[None]:
    async def loop() -> None:
        while True:
            await asyncio.sleep(app[SETTINGS].API_KEY_LAST_USED_FLUSH_SECONDS)
            try:
                await flush_last_used(app)
            except Exception as exc:  # a missed flush is retried next time; Redis keeps the stamps
                log.warning("lastUsedAt flush failed", error=repr(exc))

    async for _ in _run_forever(loop, "last-used-flush"):
        yield


def create_app(settings: Settings) -> web.Application:
    """The API application, wired to the resources named in `settings`."""
    app = web.Application(
        middlewares=[cors_middleware, core_middleware, auth_middleware],
        client_max_size=settings.MAX_BODY_BYTES,
        # Passed to every connection's handler, whoever runs the app (run_app or a test server):
        # a request's headers must be complete within this time, or the connection is closed.
        handler_args={"keepalive_timeout": settings.HTTP_KEEPALIVE_SECONDS},
    )
    app[SETTINGS] = settings
    app[HEALTH] = Health(component="api", memory_limit_mb=settings.HEALTH_MEMORY_LIMIT_MB)
    app[ACCESS] = {}
    shortest = min(settings.REQUEST_TIMEOUT_SECONDS, settings.HTTP_BODY_TIMEOUT_SECONDS)
    app[DEADLINES] = Deadlines(tick=min(1.0, shortest / 4))
    app[KNOWN_KEYS] = api_keys.KnownKeys(settings.API_KEY_CACHE_SECONDS)
    routes = register(app)
    app[OPENAPI] = openapi.build(routes)
    app.cleanup_ctx.extend(
        [cpu_pool_ctx, pool_ctx, cache_ctx, twofa_ctx, broker_ctx, relay_ctx, last_used_ctx]
    )
    return app
