"""Cross-owner access on every route that names something by id or `userId`, enumerated from the
served OpenAPI document, so a route added later is attacked too (or fails here asking for a
sample value, rather than being skipped).

Owner A has an API key, a webhook with a logged delivery, and an end user with TOTP on. Owner B,
with its user token and a `*` key, sends A's ids everywhere:

- a path id of A's: 404 `NOT_FOUND`, the same answer as for an id that does not exist (a
  user-token-only route refuses B's key first: 403 `USER_TOKEN_REQUIRED`); each such attempt is
  put on A's audit trail (`security.access_denied`);
- A's `userId`: B reaches only its own namespace, where that name is nobody yet; every answer is
  the same as for a name never used anywhere, even with A's user's current code in the body;

and afterwards A's key, webhook, delivery log, secrets and end user are as they were.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from tests.api_client import create_key, new_account
from tests.ids import random_user_id
from tests.security.helpers import events_about, outcome
from tests.totp_helpers import code_at, enable_totp
from tests.webhooks.helpers import create_webhook, delivery_log
from tests.webhooks.test_webhook_api import insert_delivery

PUBLIC_URL = "http://93.184.216.34/hook"
# A value for each body or query property the attack sends (B's worst intent where it matters).
SAMPLES: dict[str, Any] = {
    "phoneNumber": "+14155550100",
    "email": "someone@example.com",
    "method": "sms",
    "url": PUBLIC_URL,
    "events": ["2fa.disabled"],
    "description": "taken over",
    "active": False,
    "gracePeriodSeconds": 0,
    "rememberDevice": True,
}
PATH_VALUES = {"type": "totp"}  # path parameters that are names, not ids


def shape(value: Any) -> Any:
    """The structure of a JSON value with its strings blanked (fresh secrets differ per call)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    return "<str>" if isinstance(value, str) else value


async def answer(response: Any) -> Any:
    if response.status >= 400:
        return await outcome(response)
    text = await response.text()
    if text.startswith(("{", "[")):
        return response.status, shape(await response.json())
    return response.status, len(text) > 0  # a stream (the audit export): empty or not


def operations(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Authenticated operations that take an id in the path or a `userId`."""
    found = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            schemes = {name for s in op.get("security") or [] for name in s}
            if not schemes:
                continue  # public: nothing of anyone's to reach
            params = op.get("parameters", [])
            content = op.get("requestBody", {}).get("content", {})
            ref = content.get("application/json", {}).get("schema", {}).get("$ref")
            body = doc["components"]["schemas"][ref.rsplit("/", 1)[1]] if ref else None
            ids = [p["name"] for p in params if p["in"] == "path" and p["name"] not in PATH_VALUES]
            in_query = any(p["name"] == "userId" and p["in"] == "query" for p in params)
            in_body = body is not None and "userId" in body.get("properties", {})
            if ids or in_query or in_body:
                found.append({"method": method.upper(), "path": path, "ids": ids, "body": body,
                              "userId": "query" if in_query else "body" if in_body else None,
                              "keys": "apiKeyHeader" in schemes})
    return found


def path_value(path: str, name: str, ids: dict[str, str]) -> str:
    """The id to put in `{name}`: by the collection it names (`/api/webhooks/{id}`), or by name."""
    collection = path[: path.index(f"{{{name}}}")] + f"{{{name}}}"
    value = ids.get(collection, ids.get(name))
    assert value is not None, f"no value for {{{name}}} in {path}: add one"
    return value


def request_for(
    op: dict[str, Any], ids: dict[str, str], user_id: str | None, code: str
) -> dict[str, Any]:
    """The request `op` with `ids` in its path, and `user_id` where the route takes one."""
    path = op["path"]
    for name in op["ids"]:
        path = path.replace(f"{{{name}}}", path_value(op["path"], name, ids), 1)
    for name, value in PATH_VALUES.items():
        path = path.replace(f"{{{name}}}", value)
    body, params = None, {}
    if op["body"] is not None:
        props = op["body"].get("properties", {})
        missing = [p for p in op["body"].get("required", []) if p not in SAMPLES and p != "code"]
        assert not missing, f"{op['method']} {op['path']}: add samples for {missing}"
        body = {p: SAMPLES[p] for p in props if p in SAMPLES}
        if "code" in props:
            body["code"] = code
    if user_id is not None:
        if op["userId"] == "query":
            params["userId"] = user_id
        if op["userId"] == "body" or "userId" in (op["body"] or {}).get("properties", {}):
            body = {**(body or {}), "userId": user_id}
    return {"method": op["method"], "path": path, "json": body, "params": params}


async def send(client: Any, request: dict[str, Any], headers: dict[str, str]) -> Any:
    r = await client.request(request["method"], request["path"], json=request["json"],
                             params=request["params"], headers=headers)
    return await answer(r)


async def snapshot(
    client: Any, db: Any, a: Any, a_key: dict[str, str], owned: dict[str, Any]
) -> dict[str, Any]:
    """What owner A sees of its things, and their secrets as stored."""
    key_id, hook_id = uuid.UUID(owned["key"]), uuid.UUID(owned["webhook"])
    r = await client.get(f"/api/api-keys/{key_id}", headers=a.auth)
    key = (await r.json())["data"]
    r = await client.get(f"/api/webhooks/{hook_id}", headers=a.auth)
    hook = (await r.json())["data"]
    r = await client.get("/api/2fa/methods", params={"userId": owned["user"]}, headers=a_key)
    methods = (await r.json())["data"]
    r = await client.get("/api/2fa/status", params={"userId": owned["user"]}, headers=a_key)
    return {
        "key": {k: v for k, v in key.items() if k != "lastUsedAt"},
        "webhook": hook,
        "deliveries": await delivery_log(client, a.auth, str(hook_id)),
        "methods": methods,
        "status": (await r.json())["data"],
        "key secrets": await db.fetchval(
            "SELECT count(*) FROM api_key_secrets WHERE api_key_id = $1", key_id),
        "webhook secrets": await db.fetch(
            "SELECT expires_at FROM webhook_secrets WHERE webhook_id = $1 ORDER BY created_at", hook_id),
    }


async def test_another_owner_reaches_nothing_by_id_or_user_id_on_any_route(client, db):
    r = await client.get("/api/openapi.json")
    ops = operations(await r.json())
    routes = {(op["method"], op["path"]) for op in ops}
    # The enumeration works (a broken one would make this test pass vacuously).
    assert {("GET", "/api/api-keys/{id}"), ("PATCH", "/api/webhooks/{id}"),
            ("POST", "/api/webhooks/{id}/deliveries/{deliveryId}/redeliver"),
            ("POST", "/api/2fa/verify"), ("GET", "/api/2fa/status"), ("GET", "/api/audit-logs")} <= routes

    a, b = await new_account(client), await new_account(client)
    a_key = {"X-API-Key": (await create_key(client, a, scopes=["*"]))["apiKey"]}
    b_key = {"X-API-Key": (await create_key(client, b, scopes=["*"]))["apiKey"]}
    user = random_user_id()
    secret = (await enable_totp(client, a_key, user))["secret"]
    hook = await create_webhook(client, a.auth, PUBLIC_URL, ["2fa.enabled"])
    delivery_id, _ = await insert_delivery(db, a.id, hook["id"], ["failed"])
    key_id = (await create_key(client, a))["id"]
    owned = {"key": key_id, "webhook": hook["id"], "user": user}
    before = await snapshot(client, db, a, a_key, owned)
    a_ids = {"/api/api-keys/{id}": key_id, "/api/webhooks/{id}": hook["id"],
             "deliveryId": str(delivery_id)}
    nobody = {name: str(uuid.uuid4()) for name in a_ids}
    # B's own parent with A's child (B's webhook, A's delivery): the child is not B's either.
    b_hook = await create_webhook(client, b.auth, PUBLIC_URL, ["2fa.enabled"])
    mixed = {**a_ids, "/api/webhooks/{id}": b_hook["id"]}

    denied_for_a, outcomes, expected = 0, {}, {}
    fresh = random_user_id()  # a name B has never used, as A's is to B
    for op in random.sample(ops, len(ops)):  # in any order: no route may rely on another
        name = f"{op['method']} {op['path']}"
        if op["ids"]:
            for who, headers in (("B's token", b.auth), ("B's key", b_key)):
                keys_welcome = who == "B's token" or op["keys"]
                refused = (404, "NOT_FOUND") if keys_welcome else (403, "USER_TOKEN_REQUIRED")
                cases = {"A's id": a_ids, "unknown id": nobody}
                if len(op["ids"]) > 1:
                    cases["B's parent, A's child"] = mixed
                for case, ids in cases.items():
                    r = await send(client, request_for(op, ids, None, "000000"), headers)
                    outcomes[(name, who, case)], expected[(name, who, case)] = r, refused
                    denied_for_a += case != "unknown id" and refused[0] == 404
        else:
            code = code_at(secret)
            key = (name, "B's key", "A's userId")
            outcomes[key] = await send(client, request_for(op, {}, user, code), b_key)
            expected[key] = await send(client, request_for(op, {}, fresh, code), b_key)
    assert outcomes == expected
    # Each userId request got past validation, so the answers compared above mean something.
    invalid = (400, "VALIDATION_ERROR")
    assert not [k for k, v in outcomes.items() if k[2] == "A's userId" and v == invalid]

    assert await snapshot(client, db, a, a_key, owned) == before
    # A is new: every refused attempt on its trail is one of B's.
    assert len(await events_about(db, "security.access_denied", a.id)) == denied_for_a
    # A's end user still verifies with its current code: B's guesses neither used it nor locked it.
    body = {"userId": user, "code": code_at(secret)}
    r = await client.post("/api/2fa/verify", json=body, headers=a_key)
    assert r.status == 200, await r.text()
