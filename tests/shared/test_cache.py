"""Lua scripts run by digest (EVALSHA) and survive Redis forgetting them (a restart or SCRIPT
FLUSH): the next call sends the text again instead of failing the request."""

from __future__ import annotations

from shared.cache import create_cache

SCRIPT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


async def test_a_script_runs_by_digest_and_again_after_redis_forgets_it(settings):
    async with create_cache(settings) as cache:
        key = cache.key("test", "script-counter")
        try:
            assert await cache.eval(SCRIPT, 1, key, 2) == 2
            sha = cache._scripts[SCRIPT].sha
            assert await cache.client.script_exists(sha) == [True]
            await cache.client.script_flush()
            assert await cache.eval(SCRIPT, 1, key, 3) == 5
            assert await cache.client.script_exists(sha) == [True]
        finally:
            await cache.client.delete(key)
