"""2FA lockout: after `TWOFA_MAX_FAILURES` consecutive wrong codes a user is locked for
`TWOFA_LOCKOUT_SECONDS`, whatever is sent. Counted in Redis, so all replicas share it.

An attempt is counted *before* the code is checked, atomically: of N parallel attempts only the
first `max` are evaluated, so a burst cannot slip past the limit; the others are refused while
the count stays above `max`. Success clears the count; a failure that reaches the limit sets the
lock. Password failures are counted elsewhere (`rate_limit`), so one cannot be used to lock the
other. The keys name the end user as the app does (owner + its user id), so that a call with an
API key counts its attempt in the same Redis round trip as the key's rate limit (`Early`),
before the user is read from the database.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from shared.cache import Cache
from shared.config import Settings
from shared.errors import RateLimited

from api.domain.rate_limit import Script

# KEYS: lock, count. ARGV: max failures, lockout seconds. Returns {attempt number, 0}, or
# {-1, seconds to wait} when locked or when `max` attempts are already being evaluated.
BEGIN_LUA = """
local ttl = redis.call('TTL', KEYS[1])
if ttl > 0 then return {-1, ttl} end
local n = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
if n > tonumber(ARGV[1]) then return {-1, tonumber(ARGV[2])} end
return {n, 0}
"""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One counted attempt: its number in the current run of failures."""

    number: int
    lock_key: str
    count_key: str


def _keys(cache: Cache, owner_id: uuid.UUID, external_id: str) -> tuple[str, str]:
    return cache.key("2fa", "lock", owner_id, external_id), cache.key("2fa", "fails", owner_id, external_id)


def _begin_script(cache: Cache, settings: Settings, owner_id: uuid.UUID, external_id: str) -> Script:
    keys = _keys(cache, owner_id, external_id)
    return Script(BEGIN_LUA, keys, (settings.TWOFA_MAX_FAILURES, settings.TWOFA_LOCKOUT_SECONDS))


def _attempt(reply: Any, script: Script) -> Attempt:
    number, retry_after = reply
    if int(number) < 0:
        raise locked_error(int(retry_after))
    return Attempt(int(number), *script.keys)


def locked_error(retry_after: int) -> RateLimited:
    return RateLimited(
        retry_after,
        "Too many wrong codes: this user is locked for now",
        code="TWO_FACTOR_LOCKED",
    )


async def begin(cache: Cache, settings: Settings, owner_id: uuid.UUID, external_id: str) -> Attempt:
    """Count an attempt, or raise 429 `TWO_FACTOR_LOCKED` with `Retry-After`."""
    script = _begin_script(cache, settings, owner_id, external_id)
    return _attempt(await cache.eval(script.lua, len(script.keys), *script.keys, *script.args), script)


class Early:
    """An attempt counted along with the API key's rate-limit check (`rate_limit.Along`): one
    Redis round trip for both. `attempt()` then gives it (None if the check did not run it: a
    user token, or a key refused), or raises 429 when the user is locked."""

    def __init__(self, cache: Cache, settings: Settings, external_id: str) -> None:
        self._cache, self._settings, self._external_id = cache, settings, external_id
        self._script: Script | None = None
        self._reply: Any = None

    def script(self, owner_id: uuid.UUID) -> Script:
        self._script = _begin_script(self._cache, self._settings, owner_id, self._external_id)
        return self._script

    def replied(self, reply: Any) -> None:
        self._reply = reply

    def attempt(self) -> Attempt | None:
        if self._script is None or self._reply is None:
            return None
        return _attempt(self._reply, self._script)


async def clear(cache: Cache, attempt: Attempt) -> None:
    """End the run of failures: after a right code, or for an attempt counted for a user
    without 2FA (no code was checked, so it was no failure)."""
    await cache.client.delete(attempt.count_key)


async def failed(cache: Cache, settings: Settings, attempt: Attempt) -> int:
    """Record the failure; returns the attempts left before the lock (0 = now locked)."""
    left = settings.TWOFA_MAX_FAILURES - attempt.number
    if left <= 0:
        await cache.client.set(attempt.lock_key, 1, ex=settings.TWOFA_LOCKOUT_SECONDS)
    return max(0, left)
