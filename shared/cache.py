"""Redis: one client per process and the key prefix that isolates deployments and test runs.

Every key the service writes goes through `Cache.key()`, so a per-run prefix in tests (or a
per-deployment prefix when Redis is shared) keeps everything apart and easy to delete.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from shared.config import Settings


@dataclass(frozen=True, slots=True)
class Cache:
    """The Redis client plus the key prefix; build keys with `key()`."""

    client: aioredis.Redis
    prefix: str
    _scripts: dict[str, AsyncScript] = field(default_factory=dict)

    def key(self, *parts: object) -> str:
        return self.prefix + ":".join(str(p) for p in parts)

    async def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:
        """`EVAL`, sent as `EVALSHA`: Redis gets the script's digest, not its text, after the
        first call (and the text again should it have forgotten it)."""
        registered = self._scripts.get(script)
        if registered is None:
            registered = self._scripts[script] = self.client.register_script(script)
        return await registered(keys=keys_and_args[:numkeys], args=keys_and_args[numkeys:])

    async def ping(self) -> None:
        await self.client.ping()


# A connection is closed (and its pending call fails, a 503) when what was sent stays
# unacknowledged for 5 s, or an idle one stops answering keepalive probes (5 s + 3 x 2 s).
DEAD_PEER = {
    socket.TCP_USER_TIMEOUT: 5000,
    socket.TCP_KEEPIDLE: 5,
    socket.TCP_KEEPINTVL: 2,
    socket.TCP_KEEPCNT: 3,
}


@asynccontextmanager
async def create_cache(settings: Settings) -> AsyncIterator[Cache]:
    """A connected Redis client, closed when the context ends."""
    client = aioredis.Redis(
        host=settings.REDIS_HOST,
        port=settings.REDIS_PORT,
        db=settings.REDIS_DB,
        password=settings.REDIS_PASSWORD,
        # No per-command timeout: redis-py would start two asyncio timeouts per call (write and
        # read), ~6% of a verify's CPU. A Redis that dies or becomes unreachable is noticed by
        # TCP instead (DEAD_PEER), a paused one by the health checks' own timeout (readiness 503).
        socket_timeout=None,
        socket_connect_timeout=3,
        socket_keepalive=True,
        socket_keepalive_options=DEAD_PEER,
        health_check_interval=30,
        max_connections=256,
    )
    try:
        yield Cache(client=client, prefix=settings.REDIS_KEY_PREFIX)
    finally:
        await client.aclose()
