"""Bad input: however malformed the request, the answer is a 4xx error envelope naming what is
wrong (each bad field for VALIDATION_ERROR), never a 500 or a traceback."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import aiohttp
import pytest

from tests.api_client import PASSWORD, new_account
from tests.ids import random_email, random_username

REGISTER = "/api/auth/register"
LOGIN = "/api/auth/login"
KEYS = "/api/api-keys"
TWO_MB = 2 * 1024 * 1024


async def error_of(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """The response's `error`, after checking the status and the exact envelope shape."""
    text = await r.text()
    assert r.status == status, text
    assert r.content_type == "application/json", text
    assert "Traceback" not in text and 'File "' not in text
    body = json.loads(text)
    assert set(body) == {"success", "error"}, body
    assert body["success"] is False
    error = body["error"]
    assert set(error) <= {"code", "message", "details"}, error
    assert re.fullmatch(r"[A-Z][A-Z0-9_]*", error["code"]), error
    assert isinstance(error["message"], str) and error["message"], error
    if code is not None:
        assert error["code"] == code, error
    return error


async def bad_fields(r: Any, code: str = "VALIDATION_ERROR") -> dict[str, str]:
    """A 400's `details.fields` as {field: message}; each entry names a field and says why."""
    error = await error_of(r, 400, code)
    fields = error["details"]["fields"]
    assert fields, error
    for field in fields:
        assert isinstance(field["field"], str) and field["field"], field
        assert isinstance(field["message"], str) and field["message"], field
    return {f["field"]: f["message"] for f in fields}


def registration(**fields: Any) -> dict[str, Any]:
    return {"email": random_email(), "username": random_username(), "password": PASSWORD, **fields}


def raw_json(client: Any, path: str, data: bytes | str, **headers: str) -> Any:
    return client.post(path, data=data, headers={"Content-Type": "application/json", **headers})


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


# JSON that does not parse, or is not an object


@pytest.mark.parametrize(
    "raw",
    [
        b'{"email": ',
        b"{'email': 'single quotes'}",
        b'{"email": "a@b.c",}',
        b'{"email": "a@b.c"}}',
        b"not json at all",
        b"\xff\xfe\xfa invalid utf-8",
        b'{"email": "raw \x00 byte"}',
        b'{"email": "' + b"\x01" + b'"}',
        b'{"rateLimit": ' + b"9" * 5000 + b"}",
    ],
    ids=["truncated", "single-quotes", "trailing-comma", "extra-brace", "text", "bad-utf8",
         "raw-nul", "raw-control", "5000-digit-number"],
)
async def test_malformed_json_is_400_naming_the_body(client, raw):
    r = await raw_json(client, REGISTER, raw)
    assert "body" in await bad_fields(r)


@pytest.mark.parametrize("raw", ["[]", '[{"email": "a@b.c"}]', '"a string"', "42", "null", "true"])
async def test_json_that_is_not_an_object_is_400(client, raw):
    r = await raw_json(client, REGISTER, raw)
    fields = await bad_fields(r)
    assert fields == {"body": "must be an object"}


# Fields: wrong types, missing, unknown


async def test_wrong_types_are_400_naming_each_field(client):
    r = await client.post(REGISTER, json={"email": 123, "username": ["a"], "password": {"x": 1}})
    assert set(await bad_fields(r)) == {"email", "username", "password"}


async def test_wrong_types_on_api_key_creation_name_each_field(client):
    account = await new_account(client)
    body = {"name": 5, "scopes": "2fa:read", "rateLimit": "lots", "expiresAt": "tomorrow"}
    r = await client.post(KEYS, json=body, headers=account.auth)
    assert set(await bad_fields(r)) == {"name", "scopes", "rateLimit", "expiresAt"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("scopes", ["root"]),
        ("scopes", []),
        ("rateLimit", 0),
        ("rateLimit", 1e999),
        ("rateLimit", 10**30),
        ("expiresAt", "2030-01-01T00:00:00"),
        ("expiresAt", "2001-01-01T00:00:00Z"),
        ("expiresAt", "9999-12-31T23:59:59-14:00"),
    ],
    ids=["unknown-scope", "no-scopes", "zero-limit", "infinite-limit", "huge-limit", "naive-time",
         "past-time", "beyond-year-9999-in-utc"],
)
async def test_bad_api_key_values_are_400_naming_the_field(client, field, value):
    account = await new_account(client)
    body = {"name": "k", "scopes": ["2fa:read"], field: value}
    r = await client.post(KEYS, json=body, headers=account.auth)
    assert set(await bad_fields(r)) == {field}


async def test_missing_fields_are_400_naming_each_field(client):
    r = await client.post(REGISTER, json={})
    assert set(await bad_fields(r)) == {"email", "username", "password"}
    r = await client.post(REGISTER, json={"email": random_email()})
    assert set(await bad_fields(r)) == {"username", "password"}
    r = await client.post(LOGIN, data=b"", headers={"Content-Type": "application/json"})
    assert set(await bad_fields(r)) == {"emailOrUsername", "password"}


async def test_unknown_fields_are_rejected_as_unknown_field(client):
    r = await client.post(REGISTER, json=registration(isAdmin=True, role="owner"))
    assert await bad_fields(r) == {"isAdmin": "unknown field", "role": "unknown field"}
    r = await client.post(LOGIN, json={"emailOrUsername": "someone", "password": PASSWORD, "x": 1})
    assert await bad_fields(r) == {"x": "unknown field"}


async def test_unknown_and_wrong_query_parameters_are_400_naming_them(client):
    account = await new_account(client)
    for query, field in [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=" + "9" * 5000, "limit"),
        ("limit=1&limit=2", "limit"),
        ("sort=name", "sort"),
    ]:
        r = await client.get(f"{KEYS}?{query}", headers=account.auth)
        fields = await bad_fields(r)
        assert set(fields) == {field}, query
    r = await client.get(f"{KEYS}?sort=name", headers=account.auth)
    assert await bad_fields(r) == {"sort": "unknown field"}


@pytest.mark.parametrize(
    "cursor",
    ["garbage!", "e30", cursor_of(["not a time", "x"]), cursor_of(["2020-01-01T00:00:00", None])],
    ids=["not-base64", "object", "bad-time", "naive-time"],
)
async def test_undecodable_cursor_is_400_naming_it(client, cursor):
    account = await new_account(client)
    r = await client.get(KEYS, params={"cursor": cursor}, headers=account.auth)
    assert set(await bad_fields(r, "INVALID_CURSOR")) == {"cursor"}


@pytest.mark.parametrize(
    "cursor",
    [cursor_of(["2020-01-01T00:00:00+00:00", 5]), cursor_of(["2020-01-01T00:00:00+00:00", ["x"]])],
    ids=["numeric-id", "list-id"],
)
async def test_cursor_with_a_non_string_id_is_400_not_500(client, cursor):
    account = await new_account(client)
    r = await client.get(KEYS, params={"cursor": cursor}, headers=account.auth)
    assert set(await bad_fields(r, "INVALID_CURSOR")) == {"cursor"}


# Size: bodies over the limit, long strings, deep nesting


async def test_body_over_the_limit_with_content_length_is_413(client):
    body = b'{"email": "' + b"a" * TWO_MB + b'"}'
    r = await raw_json(client, REGISTER, body)
    assert r.request_info.headers["Content-Length"] == str(len(body))
    await error_of(r, 413, "PAYLOAD_TOO_LARGE")


async def test_chunked_body_over_the_limit_is_413(client):
    """Without Content-Length the limit is enforced while reading."""

    async def chunks():
        yield b'{"email": "'
        for _ in range(TWO_MB // (64 * 1024)):
            yield b"a" * (64 * 1024)
        yield b'"}'

    r = await raw_json(client, REGISTER, chunks())
    assert "Content-Length" not in r.request_info.headers
    assert r.request_info.headers["Transfer-Encoding"] == "chunked"
    await error_of(r, 413, "PAYLOAD_TOO_LARGE")


async def test_body_over_the_limit_on_an_authenticated_route_is_413(client):
    account = await new_account(client)
    body = json.dumps({"name": "a" * TWO_MB, "scopes": ["*"]})
    r = await raw_json(client, KEYS, body, **account.auth)
    await error_of(r, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", f"{KEYS}/00000000-0000-0000-0000-000000000000"), ("GET", "/api/auth/me"),
     ("POST", "/api/no-such-route")],
)
async def test_body_over_the_limit_is_413_even_where_it_would_not_be_read(client, method, path):
    """Declared too large: refused before authentication and before any handler runs."""
    account = await new_account(client)
    r = await client.request(method, path, data=b"a" * TWO_MB, headers=account.auth)
    await error_of(r, 413, "PAYLOAD_TOO_LARGE")


async def test_10000_character_strings_are_400_naming_each_field(client):
    long = "a" * 10_000
    r = await client.post(REGISTER, json={"email": f"{long}@example.com", "username": long, "password": long})
    assert set(await bad_fields(r)) == {"email", "username", "password"}
    r = await client.post(LOGIN, json={"emailOrUsername": long, "password": long, "deviceToken": long})
    assert set(await bad_fields(r)) == {"emailOrUsername", "password", "deviceToken"}
    r = await client.post("/api/auth/refresh", json={"refreshToken": long})
    assert set(await bad_fields(r)) == {"refreshToken"}
    account = await new_account(client)
    r = await client.post(KEYS, json={"name": long, "scopes": [long]}, headers=account.auth)
    assert set(await bad_fields(r)) == {"name", "scopes.0"}


async def test_100000_levels_of_nesting_are_refused(client):
    """Over the default size limit this is a 413; with room for it, a 400 naming the body."""
    await error_of(await raw_json(client, REGISTER, "[" * 100_000), 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 100_000,
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        '{"email": ' + "[" * 100_000 + "]" * 100_000 + "}",
    ],
    ids=["unclosed-arrays", "closed-arrays", "objects", "inside-a-field"],
)
async def test_deep_nesting_within_the_size_limit_is_400(app_factory, raw):
    client = await app_factory(MAX_BODY_BYTES=1024 * 1024)
    r = await raw_json(client, REGISTER, raw)
    assert set(await bad_fields(r)) == {"body"}


async def test_moderate_nesting_inside_a_field_names_the_field(client):
    r = await client.post(REGISTER, json=registration(username=[[[[[["x"]]]]]]))
    assert set(await bad_fields(r)) == {"username"}


# Text that PostgreSQL or bcrypt cannot take


async def test_nul_characters_are_400_naming_the_field(client):
    r = await client.post(REGISTER, json=registration(email="a\u0000b@example.com"))
    assert set(await bad_fields(r)) == {"email"}
    r = await client.post(LOGIN, json={"emailOrUsername": "bob\u0000", "password": PASSWORD})
    assert set(await bad_fields(r)) == {"emailOrUsername"}
    account = await new_account(client)
    r = await client.post(KEYS, json={"name": "k", "scopes": ["2fa:read\u0000"]}, headers=account.auth)
    assert set(await bad_fields(r)) == {"scopes.0"}


async def test_nul_characters_in_the_query_are_400_naming_the_parameter(client):
    account = await new_account(client)
    r = await client.get(f"{KEYS}?cursor=%00", headers=account.auth)
    assert set(await bad_fields(r)) == {"cursor"}


async def test_an_escaped_backslash_before_u0000_is_ordinary_text(client):
    """`\\\\u0000` in JSON is a backslash followed by `u0000`, not a NUL: a valid password."""
    password = "my\\u0000password"
    r = await client.post(REGISTER, json=registration(password=password))
    assert r.status == 201, await r.text()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (LOGIN, {"emailOrUsername": "\ud800bob", "password": PASSWORD}, "emailOrUsername"),
        (LOGIN, {"emailOrUsername": "bob", "password": "pass\udfffword"}, "password"),
        (REGISTER, registration(password="pass\ud800word"), "password"),
    ],
    ids=["login-name", "login-password", "register-password"],
)
async def test_lone_surrogates_are_400_naming_the_field(client, path, body, field):
    """JSON can escape half a UTF-16 pair (`\\ud800`), which no UTF-8 text can hold."""
    r = await client.post(path, json=body)
    assert set(await bad_fields(r)) == {field}


async def test_lone_surrogate_in_a_field_name_is_400(client):
    r = await raw_json(client, REGISTER, '{"\\ud800": 1, "email": "x"}')
    assert "body" in await bad_fields(r)


@pytest.mark.parametrize("query", ["cursor=%ED%A0%80", "cursor=%FF%FE", "%FF=1", "%ED%A0%80=1"])
async def test_invalid_utf8_in_the_query_is_400(client, query):
    account = await new_account(client)
    r = await client.get(f"{KEYS}?{query}", headers=account.auth)
    await error_of(r, 400)


async def test_lone_surrogate_in_an_api_key_name_is_400(client):
    account = await new_account(client)
    r = await client.post(KEYS, json={"name": "key \ud800", "scopes": ["2fa:read"]}, headers=account.auth)
    assert set(await bad_fields(r)) == {"name"}


@pytest.mark.parametrize(
    "password",
    ["a" * 73, "€" * 25, "Sh0rt!!", "€€"],
    ids=["73-ascii-bytes", "75-bytes-of-euro-signs", "7-chars", "6-bytes"],
)
async def test_password_outside_8_to_72_bytes_is_400_naming_it(client, password):
    r = await client.post(REGISTER, json=registration(password=password))
    text = await r.text()
    fields = await bad_fields(r)
    assert set(fields) == {"password"}
    assert "72 bytes" in fields["password"]
    assert password not in text  # the rejected value is never echoed back


@pytest.mark.parametrize("password", ["a" * 72, "€" * 24, "8chars!!"], ids=["72-ascii", "72-bytes-euro", "8-chars"])
async def test_password_of_8_to_72_bytes_is_accepted(client, password):
    r = await client.post(REGISTER, json=registration(password=password))
    assert r.status == 201, await r.text()


# Media types, routes and methods


async def test_form_encoded_body_is_415(client):
    r = await client.post(REGISTER, data=registration())
    assert r.request_info.headers["Content-Type"] == "application/x-www-form-urlencoded"
    await error_of(r, 415, "UNSUPPORTED_MEDIA_TYPE")


async def test_multipart_body_is_415(client):
    form = aiohttp.FormData()
    form.add_field("email", random_email())
    form.add_field("file", b"\x00\x01", filename="x.bin")
    r = await client.post(REGISTER, data=form)
    await error_of(r, 415, "UNSUPPORTED_MEDIA_TYPE")


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/nope"), ("POST", "/api/auth/nope"), ("GET", "/nope"), ("GET", "/api/api-keys/a/b/c"),
     ("DELETE", "/api/auth/me/x")],
)
async def test_unknown_route_is_a_404_envelope(client, method, path):
    r = await client.request(method, path, json={"a": 1})
    await error_of(r, 404, "NOT_FOUND")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [("GET", LOGIN, "POST"), ("DELETE", REGISTER, "POST"), ("PUT", KEYS, "GET"), ("PATCH", "/api/auth/me", "GET")],
)
async def test_wrong_method_is_a_405_envelope_with_allow(client, method, path, allowed):
    r = await client.request(method, path)
    await error_of(r, 405, "METHOD_NOT_ALLOWED")
    assert allowed in r.headers["Allow"]


async def test_an_api_key_id_that_is_not_a_uuid_is_404(client):
    account = await new_account(client)
    for key_id in ("not-a-uuid", "%00", "1" * 300):
        r = await client.get(f"{KEYS}/{key_id}", headers=account.auth)
        await error_of(r, 404, "NOT_FOUND")
