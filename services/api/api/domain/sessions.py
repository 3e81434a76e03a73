"""Ended sessions. Access tokens are stateless for 15 minutes, so logging out (or refresh-token
reuse) also records the session id in Redis until its last access token would have expired."""

from __future__ import annotations

import uuid

from shared.cache import Cache


def _key(cache: Cache, session_id: uuid.UUID) -> str:
    return cache.key("session", "revoked", session_id)


async def revoke(cache: Cache, session_ids: list[uuid.UUID], ttl_seconds: int) -> None:
    if session_ids:
        async with cache.client.pipeline(transaction=False) as pipe:
            for sid in session_ids:
                pipe.set(_key(cache, sid), 1, ex=ttl_seconds)
            await pipe.execute()


async def is_revoked(cache: Cache, session_id: uuid.UUID) -> bool:
    return bool(await cache.client.exists(_key(cache, session_id)))
