"""Request middleware: CORS, then request id + body-size limit + error translation + outbox
relay wake-up + one log line, then auth.

`core_middleware` is the only place exceptions become responses: `AppError` becomes its envelope,
aiohttp's own HTTP errors (404, 405, 413) are mapped to the contract's codes, a lost database or
Redis connection is a 503, and anything else is logged once and answered with a generic 500
envelope that carries no traceback.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import redis.exceptions
import structlog
from aiohttp import web

from shared import envelope, metrics, outbox
from shared.errors import (
    AppError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationFailed,
)

from api.domain import access
from api.domain.access import ForeignResource
from api.keys import DEADLINES, POOL, PRINCIPAL, RATE_HEADERS, RELAY, REQUEST_ID, SETTINGS
from api.views.common import context_of

log = structlog.get_logger("api.request")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
DEPENDENCY_ERRORS = (
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    # A pooled connection the server dropped while shutting down can fail its next query with
    # "cannot switch to state ...; another operation is in progress" (seen in tests/reliability).
    asyncpg.InternalClientError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)
ALLOWED_HEADERS = "Authorization, Content-Type, X-API-Key, X-Request-Id"
EXPOSED_HEADERS = "X-Request-Id, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset, Retry-After"


def _from_http_exception(exc: web.HTTPException) -> AppError:
    if exc.status == 404:
        return NotFound("No such endpoint")
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return MethodNotAllowed(headers={"Allow": allowed} if allowed else None)
    if exc.status == 413:
        return PayloadTooLarge()
    if 400 <= exc.status < 500:
        error = ValidationFailed(exc.reason)
        error.status = exc.status
        return error
    return AppError()


def _route_template(request: web.Request) -> str:
    """The matched route's template (bounded label values), or "unmatched"."""
    resource = getattr(request.match_info.route, "resource", None)
    return resource.canonical if resource is not None else "unmatched"


async def _record_denial(request: web.Request, refused: ForeignResource) -> None:
    """Put a refused cross-owner attempt on the record; the 404 goes out either way."""
    try:
        async with request.app[POOL].acquire() as conn:
            await access.record_denial(conn, context_of(request), refused)
    except Exception as exc:
        log.warning("could not record a refused cross-owner attempt", error=repr(exc))


@web.middleware
async def core_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service="api", request_id=request_id)
    started = time.perf_counter()
    error_code = None
    settings = request.app[SETTINGS]
    written = outbox.watch()
    try:
        # Refused before auth runs, and also where the handler would never read the body.
        if request.content_length is not None and request.content_length > settings.MAX_BODY_BYTES:
            raise PayloadTooLarge(details={"maxBytes": settings.MAX_BODY_BYTES})
        # One deadline for the whole request (a TimeoutError: 503 below), not one per command.
        response = await request.app[DEADLINES].run(handler(request), settings.REQUEST_TIMEOUT_SECONDS)
    except AppError as exc:
        if isinstance(exc, ForeignResource):
            await _record_denial(request, exc)
        response, error_code = envelope.error(exc), exc.code
    except web.HTTPException as exc:
        app_error = _from_http_exception(exc)
        response, error_code = envelope.error(app_error), app_error.code
    except DEPENDENCY_ERRORS as exc:
        log.warning("dependency unavailable", error=repr(exc))
        unavailable = ServiceUnavailable(headers={"Retry-After": "5"})
        response, error_code = envelope.error(unavailable), unavailable.code
    except Exception:
        log.exception("unhandled error")
        response, error_code = envelope.error(AppError()), "INTERNAL_ERROR"
    if written.events:
        # Committed by now (or rolled back: then the relay finds nothing). One wake per request
        # instead of a NOTIFY per commit; the relay gathers what other requests write meanwhile.
        request.app[RELAY].wake()
    response.headers["X-Request-Id"] = request_id
    for name, value in request.get(RATE_HEADERS, {}).items():
        response.headers[name] = value
    elapsed = time.perf_counter() - started
    route = _route_template(request)
    metrics.HTTP_REQUESTS.labels(request.method, route, str(response.status)).inc()
    metrics.HTTP_LATENCY.labels(request.method, route).observe(elapsed)
    principal = request.get(PRINCIPAL)
    log.info(
        "request",
        method=request.method,
        path=request.path,
        status=response.status,
        ms=round(elapsed * 1000, 2),
        principal=f"{principal.kind}:{principal.api_key_id or principal.owner_id}" if principal else None,
        error_code=error_code,
    )
    return response


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    origin = request.headers.get("Origin")
    allowed = request.app[SETTINGS].CORS_ORIGINS
    permitted = bool(origin) and ("*" in allowed or origin in allowed)
    if (
        permitted
        and request.method == "OPTIONS"
        and "Access-Control-Request-Method" in request.headers
    ):
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": origin or "",
                "Access-Control-Allow-Methods": "GET, POST, PATCH, PUT, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            },
        )
    response = await handler(request)
    if permitted:
        response.headers["Access-Control-Allow-Origin"] = origin or ""
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        response.headers["Vary"] = "Origin"
    return response
