"""The one builder of response bodies: the contract's success and error envelopes.

Success: `{"success": true, "data": payload}`; when the payload is an object its keys are also
copied to the top level (never over `success`/`data`), because the guide's snippets read both
`.data.accessToken` and `{ apiKey }` from the same response. Lists carry `nextCursor` beside
`data`. Errors: `{"success": false, "error": {code, message, details?}}`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from shared import json_codec
from shared.errors import AppError

RESERVED = ("success", "data")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, UUID):
        return str(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(body: Any) -> bytes:
    return json_codec.dumps(body, default=_default, utc_z=True)


def success_body(payload: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"success": True, "data": payload}
    if isinstance(payload, Mapping):
        for key, value in payload.items():
            if key not in RESERVED:
                body[key] = value
    return body


def error_body(exc: AppError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.code, "message": exc.message}
    if exc.details:
        error["details"] = exc.details
    return {"success": False, "error": error}


def _json(body: dict[str, Any], status: int, headers: Mapping[str, str] | None) -> web.Response:
    return web.Response(
        body=dumps(body), status=status, content_type="application/json", charset="utf-8",
        headers=headers,
    )


def ok(payload: Any = None, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A success response."""
    return _json(success_body(payload), status, headers)


def page(items: Sequence[Any], next_cursor: str | None) -> web.Response:
    """A list response: `data` is the array, `nextCursor` beside it."""
    return _json({"success": True, "data": list(items), "nextCursor": next_cursor}, 200, None)


def status_report(payload: Mapping[str, Any], status: int) -> web.Response:
    """A health-style report: the payload enveloped, `success` false when the status is 5xx."""
    body = success_body(payload)
    if status >= 500:
        body["success"] = False
        body["error"] = {
            "code": "SERVICE_UNAVAILABLE",
            "message": "A dependency is unavailable",
        }
    return _json(body, status, None)


def error(exc: AppError) -> web.Response:
    """An error response with the error's status and headers (e.g. Retry-After)."""
    return _json(error_body(exc), exc.status, exc.headers)
