"""What the fuzzer found, pinned down as plain tests so it stays fixed whatever FUZZ_EXAMPLES is."""

from __future__ import annotations

from tests.api_client import error_code, new_account

# Over bcrypt's 72-byte limit, which bcrypt 5 refuses with ValueError instead of truncating.
LONG_PASSWORD = "x" * 73


async def test_a_password_over_72_bytes_is_a_wrong_password_at_login(client):
    account = await new_account(client)
    for name in (account.username, "nobody_here"):
        r = await client.post(
            "/api/auth/login", json={"emailOrUsername": name, "password": LONG_PASSWORD}
        )
        assert r.status == 401, await r.text()
        assert await error_code(r) == "INVALID_CREDENTIALS"


async def test_a_password_over_72_bytes_is_a_wrong_password_when_turning_2fa_off(client):
    account = await new_account(client)
    r = await client.delete(
        "/api/2fa/methods/totp", json={"password": LONG_PASSWORD}, headers=account.auth
    )
    assert r.status == 401, await r.text()
    assert await error_code(r) == "INVALID_CREDENTIALS"


async def test_a_number_is_not_a_date_time(client):
    """The contract's times are ISO-8601 strings; "0.0" used to be read as Unix time."""
    account = await new_account(client)
    r = await client.get("/api/audit-logs", params={"from": "0.0"}, headers=account.auth)
    assert r.status == 400, await r.text()
    assert (await r.json())["error"]["details"]["fields"][0]["field"] == "from"
    r = await client.post(
        "/api/api-keys",
        json={"name": "k", "scopes": ["2fa:read"], "expiresAt": 4102444800},
        headers=account.auth,
    )
    assert r.status == 400, await r.text()
    assert (await r.json())["error"]["details"]["fields"][0]["field"] == "expiresAt"


async def test_a_request_line_over_8_kb_gets_the_plain_400_the_document_describes(client):
    account = await new_account(client)
    r = await client.get("/api/auth/me", params={"pad": "a" * 9000}, headers=account.auth)
    assert r.status == 400 and r.content_type == "text/plain"
    document = await (await client.get("/api/openapi.json")).json()
    assert "text/plain" in document["paths"]["/api/auth/me"]["get"]["responses"]["400"]["content"]
