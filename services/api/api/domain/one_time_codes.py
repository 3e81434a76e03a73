"""SMS and email codes in Redis, shared by every API replica.

A code is 6 digits from `secrets`, kept only as a keyed hash, for `CONTACT_CODE_TTL_SECONDS`,
with `CONTACT_CODE_MAX_ATTEMPTS` wrong guesses. Sending again within the lifetime replaces the
code but keeps the attempts left: a resend never buys more guesses. Sends are spaced by
`CONTACT_CODE_RESEND_SECONDS` and counted against daily caps (per user, per destination, per
owner for SMS): the SMS pumping guard. Each check-and-change is one Lua script, so concurrent
requests on several replicas cannot race past a limit.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from shared.cache import Cache
from shared.config import Settings
from shared.crypto import SecretBox
from shared.errors import RateLimited

from api.domain.end_users import EndUser

Channel = Literal["sms", "email"]
Purpose = Literal["setup", "login"]

# KEYS: code hash key, cooldown key. ARGV: hash, ttl, max attempts, cooldown seconds.
# Returns {0, cooldown left} when sending too soon, else {1, attempts left}.
ISSUE_LUA = """
if tonumber(ARGV[4]) > 0 then
  if redis.call('SET', KEYS[2], 1, 'NX', 'EX', ARGV[4]) == false then
    return {0, redis.call('TTL', KEYS[2])}
  end
end
local left = tonumber(redis.call('HGET', KEYS[1], 'left') or ARGV[3])
redis.call('HSET', KEYS[1], 'h', ARGV[1], 'left', left)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return {1, left}
"""
# KEYS: code hash key. ARGV: hash. Returns {status, attempts left, ttl}:
# status 1 right (the code is used up), 0 wrong, -1 no code, -2 no attempts left.
CHECK_LUA = """
local stored = redis.call('HMGET', KEYS[1], 'h', 'left')
if not stored[1] then return {-1, 0, 0} end
local left = tonumber(stored[2])
if left <= 0 then return {-2, 0, redis.call('TTL', KEYS[1])} end
if stored[1] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return {1, left, 0}
end
redis.call('HSET', KEYS[1], 'left', left - 1)
return {0, left - 1, redis.call('TTL', KEYS[1])}
"""
# KEYS: daily counters. ARGV: their caps (same order), then the key TTL.
# Returns 0 when every counter was below its cap (all are then incremented), else the
# 1-based index of the first counter at its cap.
CAPS_LUA = """
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[i]) then return i end
end
for i, key in ipairs(KEYS) do
  redis.call('INCR', key)
  redis.call('EXPIRE', key, ARGV[#KEYS + 1])
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Issued:
    code: str
    expires_at: datetime
    attempts_left: int


@dataclass(frozen=True, slots=True)
class Checked:
    status: Literal["right", "wrong", "none", "exhausted"]
    attempts_left: int
    retry_after: int


def _code_key(cache: Cache, user: EndUser, channel: Channel, purpose: Purpose) -> str:
    return cache.key("otp", user.owner_id, user.id, channel, purpose)


def _cooldown_key(cache: Cache, user: EndUser, channel: Channel, purpose: Purpose) -> str:
    return cache.key("otp-cooldown", user.owner_id, user.id, channel, purpose)


def _hash(box: SecretBox, user: EndUser, channel: Channel, purpose: Purpose, code: str) -> str:
    return box.keyed_hash(f"{user.owner_id}:{user.id}:{channel}:{purpose}:{code}").hex()


def new_code() -> str:
    return f"{secrets.randbelow(1_000_000):06d}"


async def issue(
    cache: Cache, box: SecretBox, settings: Settings, user: EndUser, channel: Channel, purpose: Purpose
) -> Issued:
    """A new code for the user, or 429 `RESEND_TOO_SOON` within the cooldown."""
    code = new_code()
    ttl = settings.CONTACT_CODE_TTL_SECONDS
    sent, value = await cache.eval(
        ISSUE_LUA,
        2,
        _code_key(cache, user, channel, purpose),
        _cooldown_key(cache, user, channel, purpose),
        _hash(box, user, channel, purpose, code),
        ttl,
        settings.CONTACT_CODE_MAX_ATTEMPTS,
        settings.CONTACT_CODE_RESEND_SECONDS,
    )
    if not sent:
        raise RateLimited(
            int(value), "A code was sent moments ago; wait before asking again", code="RESEND_TOO_SOON"
        )
    return Issued(code, datetime.now(UTC) + timedelta(seconds=ttl), int(value))


async def check(
    cache: Cache, box: SecretBox, user: EndUser, channel: Channel, purpose: Purpose, code: str
) -> Checked:
    status, left, ttl = await cache.eval(
        CHECK_LUA, 1, _code_key(cache, user, channel, purpose), _hash(box, user, channel, purpose, code)
    )
    names = {1: "right", 0: "wrong", -1: "none", -2: "exhausted"}
    return Checked(names[int(status)], int(left), max(int(ttl), 1))  # type: ignore[arg-type]


async def refuse_if_too_soon(cache: Cache, user: EndUser, channel: Channel, purpose: Purpose) -> None:
    """429 `RESEND_TOO_SOON` during the cooldown (checked before a send is counted)."""
    left = await cache.client.ttl(_cooldown_key(cache, user, channel, purpose))
    if left > 0:
        raise RateLimited(left, "A code was sent moments ago; wait before asking again", code="RESEND_TOO_SOON")


async def pending_channels(cache: Cache, user: EndUser, purpose: Purpose) -> list[Channel]:
    """The channels with a code waiting for this user (one Redis round trip)."""
    channels: list[Channel] = ["sms", "email"]
    async with cache.client.pipeline(transaction=False) as pipe:
        for channel in channels:
            pipe.exists(_code_key(cache, user, channel, purpose))
        found = await pipe.execute()
    return [channel for channel, exists in zip(channels, found, strict=True) if exists]


@dataclass(frozen=True, slots=True)
class Cap:
    name: str  # what the refusal says was exceeded
    key: str
    limit: int


def daily_caps(cache: Cache, settings: Settings, user: EndUser, channel: Channel, destination: str) -> list[Cap]:
    day = datetime.now(UTC).strftime("%Y%m%d")
    digest = hashlib.sha256(destination.lower().encode()).hexdigest()[:32]  # no PII in key names
    if channel == "sms":
        return [
            Cap("user", cache.key("cap", "sms", "user", user.owner_id, user.id, day), settings.SMS_DAILY_LIMIT_PER_USER),
            Cap("phone number", cache.key("cap", "sms", "phone", digest, day), settings.SMS_DAILY_LIMIT_PER_PHONE),
            Cap("account", cache.key("cap", "sms", "owner", user.owner_id, day), settings.SMS_DAILY_LIMIT_PER_OWNER),
        ]
    return [
        Cap("user", cache.key("cap", "email", "user", user.owner_id, user.id, day), settings.EMAIL_DAILY_LIMIT_PER_USER),
        Cap("address", cache.key("cap", "email", "address", digest, day), settings.EMAIL_DAILY_LIMIT_PER_ADDRESS),
    ]


def seconds_to_midnight() -> int:
    now = time.time()
    return int(86400 - now % 86400) + 1


async def count_send(caps: list[Cap], cache: Cache) -> Cap | None:
    """Count one send against every cap; the cap that refuses it (nothing counted), or None."""
    hit = await cache.eval(
        CAPS_LUA, len(caps), *[c.key for c in caps], *[c.limit for c in caps], 2 * 86400
    )
    return caps[int(hit) - 1] if int(hit) else None
