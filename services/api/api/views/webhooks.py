"""/webhooks: create, list, get, update, delete, test, rotate-secret, deliveries, redeliver."""

from __future__ import annotations

import uuid

from aiohttp import web

from shared.envelope import ok, page
from shared.errors import NotFound, ValidationFailed

from api.domain import webhooks
from api.keys import POOL, SECRET_BOX, SETTINGS
from api.parsing import parse_json, parse_query
from api.schemas import (
    CreateWebhookBody,
    DeliveriesQuery,
    ListQuery,
    RotateWebhookSecretBody,
    UpdateWebhookBody,
)
from api.views.common import context_of


def _uuid_param(request: web.Request, name: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(request.match_info[name])
    except ValueError:
        raise NotFound(f"{what} not found") from None


def webhook_id_of(request: web.Request) -> uuid.UUID:
    return _uuid_param(request, "id", "Webhook")


async def create(request: web.Request) -> web.Response:
    body = await parse_json(request, CreateWebhookBody)
    url = await webhooks.checked_url(
        body.url, allow_private=request.app[SETTINGS].WEBHOOK_ALLOW_PRIVATE_URLS
    )
    async with request.app[POOL].acquire() as conn:
        created = await webhooks.create(
            conn,
            context_of(request),
            request.app[SECRET_BOX],
            url=url,
            events=body.events,
            description=body.description,
        )
    return ok(created, status=201)


async def list_webhooks(request: web.Request) -> web.Response:
    query = parse_query(request, ListQuery)
    async with request.app[POOL].acquire() as conn:
        rows, cursor = await webhooks.list_page(conn, context_of(request), query.limit, query.cursor)
    return page([webhooks.view(r) for r in rows], cursor)


async def get(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        row = await webhooks.get(conn, context_of(request), webhook_id_of(request))
    return ok(webhooks.view(row))


async def update(request: web.Request) -> web.Response:
    body = await parse_json(request, UpdateWebhookBody)
    changes = body.model_dump(exclude_unset=True)
    cleared = sorted(k for k in ("url", "events", "active") if k in changes and changes[k] is None)
    if cleared:
        raise ValidationFailed(
            f"Invalid request body: {', '.join(cleared)}",
            details={"fields": [{"field": k, "message": "may not be null"} for k in cleared]},
        )
    if changes.get("url") is not None:
        changes["url"] = await webhooks.checked_url(
            changes["url"], allow_private=request.app[SETTINGS].WEBHOOK_ALLOW_PRIVATE_URLS
        )
    async with request.app[POOL].acquire() as conn:
        row = await webhooks.update(conn, context_of(request), webhook_id_of(request), changes)
    return ok(webhooks.view(row))


async def delete(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        row = await webhooks.delete(conn, context_of(request), webhook_id_of(request))
    return ok({**webhooks.view(row), "deleted": True})


async def send_test(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        queued = await webhooks.send_test(conn, context_of(request), webhook_id_of(request))
    return ok(queued, status=202)


async def rotate_secret(request: web.Request) -> web.Response:
    body = await parse_json(request, RotateWebhookSecretBody)
    async with request.app[POOL].acquire() as conn:
        rotated = await webhooks.rotate_secret(
            conn,
            context_of(request),
            request.app[SECRET_BOX],
            webhook_id_of(request),
            body.gracePeriodSeconds,
        )
    return ok(rotated)


async def deliveries(request: web.Request) -> web.Response:
    query = parse_query(request, DeliveriesQuery)
    async with request.app[POOL].acquire() as conn:
        rows, cursor = await webhooks.deliveries_page(
            conn, context_of(request), webhook_id_of(request), query.status, query.limit, query.cursor
        )
    return page([webhooks.delivery_view(r) for r in rows], cursor)


async def redeliver(request: web.Request) -> web.Response:
    delivery_id = _uuid_param(request, "deliveryId", "Delivery")
    async with request.app[POOL].acquire() as conn:
        queued = await webhooks.redeliver(
            conn, context_of(request), webhook_id_of(request), delivery_id
        )
    return ok(queued, status=202)
