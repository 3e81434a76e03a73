"""2FA lockout: after `TWOFA_MAX_FAILURES` consecutive wrong codes a user is locked for
`TWOFA_LOCKOUT_SECONDS`, whatever is sent. Counted in Redis, so all replicas share it.

An attempt is counted *before* the code is checked (`begin`), atomically: of N parallel
attempts only the first `max` are evaluated, so a burst cannot slip past the limit. Success
clears the count; a failure that reaches the limit sets the lock. Password failures are counted
elsewhere (`rate_limit`), so one cannot be used to lock the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.cache import Cache
from shared.config import Settings
from shared.errors import RateLimited

from api.domain.end_users import EndUser

BEGIN_LUA = """
local ttl = redis.call('TTL', KEYS[1])
if ttl > 0 then return {-1, ttl} end
local n = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
if n > tonumber(ARGV[1]) then
    redis.call('SET', KEYS[1], 1, 'EX', ARGV[2])
    return {-1, tonumber(ARGV[2])}
end
return {n, 0}
"""


@dataclass(frozen=True, slots=True)
class Attempt:
    """One counted attempt: its number in the current run of failures."""

    number: int
    lock_key: str
    count_key: str


def _keys(cache: Cache, user: EndUser) -> tuple[str, str]:
    return cache.key("2fa", "lock", user.owner_id, user.id), cache.key("2fa", "fails", user.owner_id, user.id)


def locked_error(retry_after: int) -> RateLimited:
    return RateLimited(
        retry_after,
        "Too many wrong codes: this user is locked for now",
        code="TWO_FACTOR_LOCKED",
    )


async def begin(cache: Cache, settings: Settings, user: EndUser) -> Attempt:
    """Count an attempt, or raise 429 `TWO_FACTOR_LOCKED` with `Retry-After`."""
    lock_key, count_key = _keys(cache, user)
    number, retry_after = await cache.eval(
        BEGIN_LUA, 2, lock_key, count_key, settings.TWOFA_MAX_FAILURES, settings.TWOFA_LOCKOUT_SECONDS
    )
    if int(number) < 0:
        raise locked_error(int(retry_after))
    return Attempt(int(number), lock_key, count_key)


async def succeeded(cache: Cache, attempt: Attempt) -> None:
    await cache.client.delete(attempt.count_key)


async def failed(cache: Cache, settings: Settings, attempt: Attempt) -> int:
    """Record the failure; returns the attempts left before the lock (0 = now locked)."""
    left = settings.TWOFA_MAX_FAILURES - attempt.number
    if left <= 0:
        await cache.client.set(attempt.lock_key, 1, ex=settings.TWOFA_LOCKOUT_SECONDS)
    return max(0, left)
