"""Authentication and authorisation: every route declares its `Access`, one middleware enforces it.

A bearer credential starting with `tfa_` is an API key, anything else a user JWT, so the two are
told apart without a lookup. A route without a declared policy is refused (fail closed). API-key
requests are counted against the key's rolling hourly limit on the way in, and the limit headers
are set on every key-authenticated response, errors included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web
from aiohttp.web_urldispatcher import MatchInfoError

from shared.errors import Forbidden, InsufficientScope, RateLimited, Unauthorized

from api.domain import api_keys, rate_limit, sessions, tokens
from api.keys import ACCESS, CACHE, KNOWN_KEYS, POOL, PRINCIPAL, RATE_HEADERS, SETTINGS
from api.principal import ALL_SCOPES, Principal


@dataclass(frozen=True, slots=True)
class Access:
    """Who may call a route: the credential kinds accepted and the scope an API key needs."""

    kinds: frozenset[str]
    scope: str | None = None
    # The view authenticates itself (with `authenticate(request, access)`), because what the
    # request carries decides which credential counts (e.g. a tempToken in the body).
    deferred: bool = False

    @property
    def public(self) -> bool:
        return not self.kinds


PUBLIC = Access(frozenset())
USER_ONLY = Access(frozenset({"user"}))
# POST /2fa/verify: a tempToken in the body alone authorises it; otherwise a key or user token.
TEMP_TOKEN_OR_KEY = Access(frozenset({"user", "apiKey"}), "2fa:write", deferred=True)


def either(scope: str) -> Access:
    """A user token (acting on itself) or an API key holding `scope`."""
    return Access(frozenset({"user", "apiKey"}), scope)


def credential(request: web.Request) -> tuple[str | None, bool]:
    """The presented credential, and whether it came in `X-API-Key` (so can only be a key)."""
    key = request.headers.get("X-API-Key", "").strip()
    if key:
        return key, True
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip(), False
    return None, False


async def authenticate(
    request: web.Request, access: Access, along: rate_limit.Along | None = None
) -> Principal:
    """Resolve the caller for a protected route, or raise 401/403/429. With an API key that
    holds the route's scope, `along` runs in the same Redis call as the key's rate limit."""
    presented, in_key_header = credential(request)
    if presented is None:
        raise Unauthorized("Send a user token or an API key", code="UNAUTHORIZED")
    # Whatever arrives in X-API-Key is looked up as a key: a wrong one gets the same 401 whether
    # or not it has the key prefix (and a user token is never accepted in that header).
    if in_key_header or api_keys.looks_like_key(presented):
        if "apiKey" not in access.kinds:
            raise Forbidden("This endpoint needs a user token, not an API key", code="USER_TOKEN_REQUIRED")
        principal = await _api_key_principal(request, presented, access.scope, along)
    else:
        principal = await _user_principal(request, presented)
    if access.scope and not principal.has_scope(access.scope):
        raise InsufficientScope(access.scope)
    return principal


async def _api_key_principal(
    request: web.Request, key: str, scope: str | None, along: rate_limit.Along | None
) -> Principal:
    known, cache = request.app[KNOWN_KEYS], request.app[CACHE]
    key_digest = api_keys.digest(key)
    remembered = known.get(key_digest)
    record, read_at = remembered or await _read_key(request, key_digest)
    identity = record.checked()
    principal = _key_principal(identity)
    # A key without the route's scope gets its 403 from the caller: the route's work must not run.
    if along is not None and scope is not None and not principal.has_scope(scope):
        along = None
    script = along.script(identity.owner_id) if along is not None else None
    changed = api_keys.changed_key(cache, identity.owner_id)
    result, reply = await rate_limit.hit(cache, identity.id, identity.rate_limit, changed, script)
    if along is not None and reply is not None:
        along.replied(reply)
    if remembered is not None and result.changed_at >= read_at:
        # Revoked or rotated since this process read it: read it again before trusting it. (An
        # `along` has run by then: a key revoked moments ago may count one lockout attempt.)
        known.drop(key_digest)
        record, _ = await _read_key(request, key_digest)
        identity = record.checked()
        principal = _key_principal(identity)
    request[RATE_HEADERS] = result.headers()
    if not result.allowed:
        raise RateLimited(
            result.retry_after,
            f"This API key is over its limit of {identity.rate_limit} requests per hour",
        )
    return principal


def _key_principal(identity: api_keys.KeyIdentity) -> Principal:
    return Principal(
        kind="apiKey", owner_id=identity.owner_id, scopes=identity.scopes, api_key_id=identity.id
    )


async def _read_key(request: web.Request, key_digest: bytes) -> tuple[api_keys.KeyRecord, float]:
    read_at = time.time()  # before the read: a change committed during it is newer
    async with request.app[POOL].acquire() as conn:
        record = await api_keys.lookup(conn, key_digest)
    request.app[KNOWN_KEYS].put(key_digest, record, read_at)
    return record, read_at


async def _user_principal(request: web.Request, token: str) -> Principal:
    claims = tokens.decode(token, "access", request.app[SETTINGS].JWT_ACCESS_SECRET)
    account_id = tokens.subject_uuid(claims)
    session_id = tokens.subject_uuid(claims, "sid") if "sid" in claims else None
    if session_id and await sessions.is_revoked(request.app[CACHE], session_id):
        raise Unauthorized("This session has ended; log in again", code="TOKEN_REVOKED")
    return Principal(kind="user", owner_id=account_id, scopes=ALL_SCOPES, session_id=session_id)


@web.middleware
async def auth_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    if isinstance(request.match_info, MatchInfoError):
        return await handler(request)  # 404/405: nothing to protect
    access = request.app[ACCESS].get(request.match_info.route)
    if access is None:
        raise Forbidden("This route has no access policy", code="FORBIDDEN")
    if not access.public and not access.deferred:
        request[PRINCIPAL] = await authenticate(request, access)
    return await handler(request)
