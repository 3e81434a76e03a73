"""/api-keys: create, list, get, rotate, revoke, usage (user tokens only)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from aiohttp import web

from shared.envelope import ok, page
from shared.errors import NotFound, ValidationFailed

from api.domain import api_keys, rate_limit
from api.keys import CACHE, POOL, SETTINGS
from api.parsing import parse_json, parse_query
from api.schemas import CreateApiKeyBody, ListQuery, RotateApiKeyBody
from api.views.common import context_of


def key_id_of(request: web.Request) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info["id"])
    except ValueError:
        raise NotFound("API key not found") from None


async def _last_used(request: web.Request, ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime]:
    """`lastUsedAt` not yet flushed to the database lives in Redis; merge it in."""
    if not ids:
        return {}
    cache = request.app[CACHE]
    values = await cache.client.hmget(rate_limit.last_used_key(cache), [str(i) for i in ids])
    return {
        i: datetime.fromtimestamp(float(v), UTC) for i, v in zip(ids, values, strict=True) if v
    }


async def create(request: web.Request) -> web.Response:
    body = await parse_json(request, CreateApiKeyBody)
    settings = request.app[SETTINGS]
    if body.rateLimit is not None and body.rateLimit > settings.API_KEY_MAX_RATE_LIMIT:
        limit = settings.API_KEY_MAX_RATE_LIMIT
        raise ValidationFailed(
            "Invalid request body: rateLimit",
            details={"fields": [{"field": "rateLimit",
                                 "message": f"Input should be less than or equal to {limit}",
                                 "type": "less_than_equal"}]},
        )
    async with request.app[POOL].acquire() as conn:
        created = await api_keys.create(
            conn,
            context_of(request),
            name=body.name,
            scopes=body.scopes,
            rate_limit=body.rateLimit or settings.API_KEY_DEFAULT_RATE_LIMIT,
            expires_at=body.expiresAt,
        )
    return ok(created, status=201)


async def list_keys(request: web.Request) -> web.Response:
    query = parse_query(request, ListQuery)
    async with request.app[POOL].acquire() as conn:
        rows, cursor = await api_keys.list_page(conn, context_of(request), query.limit, query.cursor)
    last_used = await _last_used(request, [r["id"] for r in rows])
    return page([api_keys.key_view(r, last_used.get(r["id"])) for r in rows], cursor)


async def get(request: web.Request) -> web.Response:
    key_id = key_id_of(request)
    async with request.app[POOL].acquire() as conn:
        row = await api_keys.get(conn, context_of(request), key_id)
    last_used = await _last_used(request, [key_id])
    return ok(api_keys.key_view(row, last_used.get(key_id)))


async def rotate(request: web.Request) -> web.Response:
    body = await parse_json(request, RotateApiKeyBody)
    async with request.app[POOL].acquire() as conn:
        view = await api_keys.rotate(
            conn, context_of(request), key_id_of(request), body.gracePeriodSeconds
        )
    await _announce_change(request)
    return ok(view)


async def revoke(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        row = await api_keys.revoke(conn, context_of(request), key_id_of(request))
    await _announce_change(request)
    return ok(api_keys.key_view(row))


async def _announce_change(request: web.Request) -> None:
    """Every API process re-reads this owner's keys on their next use (`KnownKeys`)."""
    settings = request.app[SETTINGS]
    ctx = context_of(request)
    await api_keys.mark_changed(request.app[CACHE], ctx.owner_id, settings.API_KEY_CACHE_SECONDS)


async def usage(request: web.Request) -> web.Response:
    key_id = key_id_of(request)
    async with request.app[POOL].acquire() as conn:
        await api_keys.get(conn, context_of(request), key_id)  # 404 unless it is the caller's
    cache = request.app[CACHE]
    current = int(time.time() // 3600)
    hours = list(range(current - 23, current + 1))
    async with cache.client.pipeline(transaction=False) as pipe:
        for hour in hours:
            pipe.hmget(rate_limit.usage_key(cache, key_id, hour), ["requests", "rejected"])
        counts = await pipe.execute()
    series = [
        {
            "hour": datetime.fromtimestamp(hour * 3600, UTC),
            "requests": int(requests or 0),
            "rejected": int(rejected or 0),
        }
        for hour, (requests, rejected) in zip(hours, counts, strict=True)
    ]
    return ok(
        {
            "total": sum(h["requests"] for h in series),
            "rejected": sum(h["rejected"] for h in series),
            "hours": series,
        }
    )
