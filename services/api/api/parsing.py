"""Request parsing: JSON bodies and query strings into pydantic models, or a 400 naming each
bad field. Nothing malformed gets past here as an exception other than `AppError`."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from shared.errors import RequestTimeout, UnsupportedMediaType, ValidationFailed

from api.keys import DEADLINES, SETTINGS

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


def _nul(fields: list[dict[str, str]]) -> ValidationFailed:
    return ValidationFailed("NUL characters are not allowed", details={"fields": fields})


def _nul_fields(data: Any) -> list[dict[str, str]]:
    """Each place in decoded JSON where a string (or a field name) holds NUL, by dotted path.

    Iterative, not recursive: JSON nested close to the decoder's limit would otherwise
    overflow the stack here instead of there."""
    found: list[dict[str, str]] = []
    stack: list[tuple[tuple[str, ...], Any]] = [((), data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                found.append({"field": ".".join(path) or "body", "message": "contains NUL"})
        elif isinstance(value, dict):
            for key, item in value.items():
                if "\x00" in key:
                    where = ".".join(path) or "body"
                    found.append({"field": where, "message": "a field name contains NUL"})
                else:
                    stack.append(((*path, key), item))
        elif isinstance(value, list):
            stack.extend(((*path, str(i)), item) for i, item in enumerate(value))
    return sorted(found, key=lambda f: f["field"])


async def read_json(request: web.Request) -> Any:
    """The decoded JSON body; an empty body is `{}`."""
    # Over-long bodies: a declared Content-Length is refused by core_middleware, a chunked one
    # by aiohttp's client_max_size while reading (413 either way).
    ctype = request.content_type
    # A body trickled in byte by byte (slowloris) would hold this handler and its connection
    # open for as long as the client likes; aiohttp itself sets no limit once the headers are in.
    try:
        raw = await request.app[DEADLINES].run(request.read(), request.app[SETTINGS].HTTP_BODY_TIMEOUT_SECONDS)
    except TimeoutError:
        raise RequestTimeout() from None
    if not raw.strip():
        return {}
    if ctype not in JSON_TYPES and not ctype.endswith("+json"):
        raise UnsupportedMediaType()
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValidationFailed(
            "The request body is not valid JSON",
            details={"fields": [{"field": "body", "message": "malformed JSON"}]},
        ) from None
    # NUL cannot be stored in PostgreSQL text and has no place in any field of this API. It is
    # looked for after decoding: a raw NUL byte is already malformed JSON, and the six characters
    # `\\u0000` after an escaped backslash are ordinary text.
    nul_fields = _nul_fields(data)
    if nul_fields:
        raise _nul(nul_fields)
    return data


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
        if "\x00" in key or any("\x00" in v for v in values):
            raise _nul([{"field": key, "message": "contains NUL"}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_failed(exc, "query") from None
