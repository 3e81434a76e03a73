"""Redis: one client per process and the key prefix that isolates deployments and test runs.

Every key the service writes goes through `Cache.key()`, so a per-run prefix in tests (or a
per-deployment prefix when Redis is shared) keeps everything apart and easy to delete.
"""

from __future__ import annotations

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


@asynccontextmanager
async def create_cache(settings: Settings) -> AsyncIterator[Cache]:
    """A connected Redis client, closed when the context ends."""
    client = aioredis.Redis(
        host=settings.REDIS_HOST,
        port=settings.REDIS_PORT,
        db=settings.REDIS_DB,
        password=settings.REDIS_PASSWORD,
        socket_timeout=5,
        socket_connect_timeout=3,
        health_check_interval=30,
        max_connections=256,
    )
    try:
        yield Cache(client=client, prefix=settings.REDIS_KEY_PREFIX)
    finally:
        await client.aclose()
