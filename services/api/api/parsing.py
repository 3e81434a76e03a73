"""Request parsing: JSON bodies and query strings into pydantic models, or a 400 naming each
bad field. Nothing malformed gets past here as an exception other than `AppError`."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from shared.errors import PayloadTooLarge, UnsupportedMediaType, ValidationFailed

from api.keys import SETTINGS

M = TypeVar("M", bound=BaseModel)
# fetch() without a Content-Type sends text/plain; accept it rather than punish the guide's users.
JSON_TYPES = frozenset({"application/json", "application/octet-stream", "text/plain"})


def field_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Each bad field by its dotted path, with a message; input values are never echoed."""
    fields = []
    for err in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in err["loc"]) or "body"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        fields.append({"field": path, "message": message, "type": err["type"]})
    return fields


def validation_failed(exc: ValidationError, where: str) -> ValidationFailed:
    fields = field_errors(exc)
    names = ", ".join(f["field"] for f in fields)
    return ValidationFailed(f"Invalid {where}: {names}", details={"fields": fields})


def _nul(field: str) -> ValidationFailed:
    return ValidationFailed(
        "NUL characters are not allowed",
        details={"fields": [{"field": field, "message": "contains NUL"}]},
    )


async def read_json(request: web.Request) -> Any:
    """The decoded JSON body; an empty body is `{}`."""
    limit = request.app[SETTINGS].MAX_BODY_BYTES
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(details={"maxBytes": limit})
    ctype = request.content_type
    raw = await request.read()
    if not raw.strip():
        return {}
    if ctype not in JSON_TYPES and not ctype.endswith("+json"):
        raise UnsupportedMediaType()
    # NUL cannot be stored in PostgreSQL text and has no place in any field of this API.
    if b"\\u0000" in raw or b"\x00" in raw:
        raise _nul("body")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationFailed(
            "The request body is not valid JSON",
            details={"fields": [{"field": "body", "message": "malformed JSON"}]},
        ) from None


async def parse_json(request: web.Request, model: type[M]) -> M:
    data = await read_json(request)
    if not isinstance(data, dict):
        raise ValidationFailed(
            "The request body must be a JSON object",
            details={"fields": [{"field": "body", "message": "must be an object"}]},
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_failed(exc, "request body") from None


def parse_query(request: web.Request, model: type[M]) -> M:
    data: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        data[key] = values[0] if len(values) == 1 else values
        if any("\x00" in v for v in values):
            raise _nul(key)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_failed(exc, "query") from None
