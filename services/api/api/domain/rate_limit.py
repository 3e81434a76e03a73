"""Redis-backed limits, shared by every API replica, one round trip per check.

- `FailureLimit`: counts failures (wrong passwords) per key in a fixed window; once a key reaches
  its limit, calls are refused with 429 and `Retry-After` until the window ends.
- `RollingLimit`: the API-key hourly limit, a sliding window of 60 one-minute buckets. The same
  script also counts usage per hour (requests and rejections), records `lastUsedAt` and reads
  the owner's keys-changed stamp (`api_keys.KnownKeys`), so a key-authenticated request costs
  one Redis call and no database write for bookkeeping. A route's own Redis work can ride along
  in that call (`Along`): `POST /2fa/verify` counts its lockout attempt there.
"""

from __future__ import annotations

import functools
import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from shared.cache import Cache
from shared.errors import RateLimited

CHECK_FAILURES_LUA = """
local worst = 0
for i, key in ipairs(KEYS) do
    local count = tonumber(redis.call('GET', key) or '0')
    if count >= tonumber(ARGV[i]) then
        local ttl = redis.call('TTL', key)
        if ttl > worst then worst = ttl end
    end
end
return worst
"""

RECORD_FAILURE_LUA = """
for _, key in ipairs(KEYS) do
    redis.call('INCR', key)
    redis.call('EXPIRE', key, ARGV[1], 'NX')
end
return 1
"""

ROLLING_LUA = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local minute = math.floor(now / 60)
local oldest = minute - 59
local changed = redis.call('GET', KEYS[4]) or '0'
local fields = redis.call('HGETALL', KEYS[1])
local total = 0
local buckets = {}
for i = 1, #fields, 2 do
    local m = tonumber(fields[i])
    local c = tonumber(fields[i + 1])
    if m < oldest then
        redis.call('HDEL', KEYS[1], fields[i])
    else
        total = total + c
        table.insert(buckets, {m, c})
    end
end
table.sort(buckets, function(a, b) return a[1] < b[1] end)
local reset = (minute + 60) * 60
if #buckets > 0 then reset = (buckets[1][1] + 60) * 60 end
if total >= limit then
    local retry = 60
    local left = total
    for _, b in ipairs(buckets) do
        left = left - b[2]
        if left < limit then
            retry = (b[1] + 60) * 60 - now
            break
        end
    end
    redis.call('HINCRBY', KEYS[2], 'rejected', 1)
    redis.call('EXPIRE', KEYS[2], 90000)
    return {0, 0, reset, math.ceil(retry), changed}
end
redis.call('HINCRBY', KEYS[1], minute, 1)
redis.call('EXPIRE', KEYS[1], 3660)
redis.call('HINCRBY', KEYS[2], 'requests', 1)
redis.call('EXPIRE', KEYS[2], 90000)
redis.call('HSET', KEYS[3], ARGV[3], ARGV[1])
return {1, limit - total - 1, reset, 0, changed}
"""


# ROLLING_LUA, then (only when it allowed the request) another script, whose reply becomes the
# sixth element. Each runs as a function of its own KEYS and ARGV: ROLLING_LUA takes the first 4
# keys and 3 arguments, the other script the rest.
ROLLING_ALONG_LUA = """
local function rolling(KEYS, ARGV)
%s
end
local function along(KEYS, ARGV)
%s
end
local result = rolling({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}, {ARGV[1], ARGV[2], ARGV[3]})
if result[1] == 1 then
    result[6] = along({unpack(KEYS, 5)}, {unpack(ARGV, 4)})
end
return result
"""


# Drop the stamps that were flushed, unless a request wrote a newer one meanwhile.
FORGET_FLUSHED_LUA = """
local removed = 0
for i = 1, #ARGV, 2 do
    if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
        removed = removed + redis.call('HDEL', KEYS[1], ARGV[i])
    end
end
return removed
"""


async def forget_flushed_last_used(cache: Cache, stamps: dict[bytes, bytes]) -> None:
    """Remove `lastUsedAt` stamps now stored in the database, so the hash stays small."""
    if stamps:
        args = [part for pair in stamps.items() for part in pair]
        await cache.eval(FORGET_FLUSHED_LUA, 1, last_used_key(cache), *args)


async def check_failures(cache: Cache, limits: dict[str, int], message: str) -> None:
    """Refuse with 429 when any key has reached its failure limit."""
    keys = list(limits)
    retry_after = await cache.eval(CHECK_FAILURES_LUA, len(keys), *keys, *limits.values())
    if int(retry_after) > 0:
        raise RateLimited(int(retry_after), message, code="TOO_MANY_ATTEMPTS")


async def record_failure(cache: Cache, keys: list[str], window_seconds: int) -> None:
    await cache.eval(RECORD_FAILURE_LUA, len(keys), *keys, window_seconds)


async def clear_failures(cache: Cache, *keys: str) -> None:
    await cache.client.delete(*keys)


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script with its keys and arguments."""

    lua: str
    keys: tuple[str, ...]
    args: tuple[Any, ...]


class Along(Protocol):
    """Redis work a route does in the same round trip as its API key's rate-limit check, run
    only when the check lets the request through. Gets the key's owner, hands back a script,
    and is given the script's reply."""

    def script(self, owner_id: uuid.UUID) -> Script: ...

    def replied(self, reply: Any) -> None: ...


@functools.cache
def _rolling_along(lua: str) -> str:
    return ROLLING_ALONG_LUA % (ROLLING_LUA, lua)


@dataclass(frozen=True, slots=True)
class RollingResult:
    allowed: bool
    limit: int
    remaining: int
    reset: int
    retry_after: int
    # When the owner's keys last changed (Unix time; 0: not lately).
    changed_at: float = 0.0

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.remaining)),
            "X-RateLimit-Reset": str(self.reset),
        }


def usage_key(cache: Cache, api_key_id: uuid.UUID, hour: int) -> str:
    return cache.key("apikey", "usage", api_key_id, hour)


def last_used_key(cache: Cache) -> str:
    return cache.key("apikey", "last-used")


async def hit(
    cache: Cache, api_key_id: uuid.UUID, limit: int, changed_key: str, along: Script | None = None
) -> tuple[RollingResult, Any]:
    """Count one request against the key's rolling hour; never raises for the limit itself.
    Also reads the stamp at `changed_key`, and runs `along` if the request is allowed: returns
    the result and `along`'s reply (None when it did not run)."""
    now = time.time()
    keys = [
        cache.key("apikey", "window", api_key_id),
        usage_key(cache, api_key_id, int(now // 3600)),
        last_used_key(cache),
        changed_key,
    ]
    args = [repr(now), limit, str(api_key_id)]
    if along is None:
        reply = await cache.eval(ROLLING_LUA, len(keys), *keys, *args)
    else:
        lua = _rolling_along(along.lua)
        reply = await cache.eval(lua, len(keys) + len(along.keys), *keys, *along.keys, *args, *along.args)
    allowed, remaining, reset, retry, changed = reply[:5]
    result = RollingResult(bool(allowed), limit, int(remaining), int(reset), int(retry), float(changed))
    return result, reply[5] if len(reply) > 5 else None
