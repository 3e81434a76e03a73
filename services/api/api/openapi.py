"""The OpenAPI 3.1 document, generated from the route table and the pydantic models, so it can
never describe a route that does not exist or miss one that does."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

from shared.health import VERSION

ERROR_STATUSES = {
    "400": (
        "Malformed JSON or invalid fields (VALIDATION_ERROR names each field). A request line or"
        " header over 8,190 bytes never reaches the API: the HTTP server refuses it in plain text"
    ),
    "401": "Missing or bad credentials",
    "403": "Missing scope or not allowed",
    "404": "Not found",
    "409": "Conflict",
    "413": "Body too large",
    "429": "Rate-limited or locked; see Retry-After",
    "503": "A dependency is down",
}

ERROR_ENVELOPE = {
    "type": "object",
    "required": ["success", "error"],
    "properties": {
        "success": {"const": False},
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"},
                "message": {"type": "string"},
                "details": {"type": "object"},
            },
        },
    },
}


class _Components:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {"ErrorEnvelope": ERROR_ENVELOPE}

    def ref(self, model: type[BaseModel], mode: str) -> dict[str, Any]:
        schema = model.model_json_schema(
            ref_template="#/components/schemas/{model}", mode=mode  # type: ignore[arg-type]
        )
        for name, definition in schema.pop("$defs", {}).items():
            self.schemas.setdefault(name, definition)
        self.schemas.setdefault(model.__name__, schema)
        return {"$ref": f"#/components/schemas/{model.__name__}"}


def _parameters(route: Any, components: _Components) -> list[dict[str, Any]]:
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    if route.query is not None:
        schema = route.query.model_json_schema()
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            params.append(
                {"name": name, "in": "query", "required": name in required, "schema": prop}
            )
    return params


def text(*media_types: str) -> dict[str, Any]:
    """A success body that is not the JSON envelope: text in each of `media_types`."""
    return {media_type: {"schema": {"type": "string"}} for media_type in media_types}


def binary(*media_types: str) -> dict[str, Any]:
    """A success body of raw bytes in each of `media_types` (OpenAPI 3.1: no schema)."""
    return {media_type: {} for media_type in media_types}


# GET /openapi.json answers the document itself, not an envelope around it.
DOCUMENT = {
    "application/json": {
        "schema": {"type": "object", "required": ["openapi", "info", "paths"]}
    }
}


def _success(route: Any, components: _Components) -> dict[str, Any]:
    if route.content is not None:
        return {"description": route.summary, "content": route.content}
    data: dict[str, Any] = {}
    if route.response is not None:
        item = components.ref(route.response, "serialization")
        data = {"type": "array", "items": item} if route.is_list else item
    properties: dict[str, Any] = {"success": {"const": True}, "data": data}
    if route.is_list:
        properties["nextCursor"] = {"type": ["string", "null"]}
    return {
        "description": route.summary,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["success", "data"],
                    "properties": properties,
                    "additionalProperties": True,
                }
            }
        },
    }


def _error_response(description: str, *, plain_text: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}
    }
    if plain_text:
        content["text/plain"] = {"schema": {"type": "string"}}
    return {"description": description, "content": content}


def build(routes: list[Any]) -> dict[str, Any]:
    """The OpenAPI document for `routes`, each at its own base (`/api`, or the root)."""
    components = _Components()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "tags": [route.tag],
            "operationId": f"{route.method.lower()}_{re.sub(r'[^a-zA-Z0-9]+', '_', route.path).strip('_')}",
            "parameters": _parameters(route, components),
            "responses": {
                str(route.status): _success(route, components),
                **{
                    status: _error_response(text, plain_text=status == "400")
                    for status, text in ERROR_STATUSES.items()
                },
            },
        }
        if not route.access.public:
            # Only what the route accepts: a user-token route refuses X-API-Key with 403.
            op["security"] = (
                [{"bearerAuth": []}, {"apiKeyHeader": []}]
                if "apiKey" in route.access.kinds
                else [{"bearerAuth": []}]
            )
            if route.access.deferred:
                # e.g. POST /2fa/verify with a tempToken in the body: no header credential at all.
                op["security"].append({})
            if route.access.scope:
                op["x-required-scope"] = route.access.scope
            op["x-credentials"] = sorted(route.access.kinds)
        if route.body is not None:
            op["responses"]["415"] = _error_response("The body is not JSON")
            # An empty body is read as `{}`: one whose fields are all optional may be left out.
            required = any(f.is_required() for f in route.body.model_fields.values())
            op["requestBody"] = {
                "required": required,
                "content": {"application/json": {"schema": components.ref(route.body, "validation")}},
            }
        paths.setdefault(route.base + route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "2FA Authentication Service",
            "version": VERSION,
            "description": "TOTP, SMS and email two-factor authentication over REST.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components.schemas,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "User access token or API key"},
                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
        },
    }
