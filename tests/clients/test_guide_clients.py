"""The integration guide's code, run as published against a live API: its Node `TwoFactorAuthClient`
(axios, in a node subprocess), its Python `TwoFactorAuthClient` (requests), its Pattern 1 proxy
flow (with `GET /2fa/methods` corrected to name the user) and a TOTP code from oathtool rather than
pyotp. Every blocking call runs in a thread: the test's event loop is the one serving the API.
`make test` installs the Node dependencies and oathtool."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.api_client import PASSWORD, Account, create_key, login, new_account
from tests.clients.guide_client import TwoFactorAuthClient
from tests.ids import random_user_id
from tests.totp_helpers import code_at, enable_totp, wrong_code

NODE_DIR = Path(__file__).parent / "node"
SUBPROCESS_TIMEOUT = 60


def base_url(client: Any) -> str:
    """The API root as the guide's clients take it (`.../api`, no trailing slash)."""
    return str(client.make_url("/api"))


async def run_program(*argv: str) -> str:
    """Run a program in a thread, so that the event loop keeps serving the API; its stdout."""
    proc = await asyncio.to_thread(
        subprocess.run, list(argv), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


async def run_node(client: Any, op: str, api_key: str, **args: str) -> dict[str, Any]:
    """Call one method of the guide's Node client: its return value, or {error, body}."""
    if not (NODE_DIR / "node_modules" / "axios").is_dir():
        pytest.fail(f"axios is not installed in {NODE_DIR}: run `make test` (it runs npm ci)")
    command = json.dumps({"op": op, "apiKey": api_key, "baseURL": base_url(client), **args})
    return json.loads(await run_program("node", str(NODE_DIR / "run.js"), command))


async def oathtool_code(secret: str) -> str:
    """The current code from oath-toolkit, a TOTP implementation independent of pyotp."""
    if shutil.which("oathtool") is None:
        pytest.fail("oathtool is not installed: run `make test` (it installs Debian's oathtool)")
    return (await run_program("oathtool", "--totp", "-b", secret)).strip()


async def account_with_key(client: Any) -> tuple[Account, str]:
    account = await new_account(client)
    return account, (await create_key(client, account))["apiKey"]


async def temp_token_for(client: Any, account: Account) -> str:
    """Log in with the password to an account that has 2FA on: the login's tempToken."""
    data = await login(client, account.username, PASSWORD)
    assert data["requiresTwoFactor"] is True, data
    return data["tempToken"]


# --- Node.js/Express: the guide's TwoFactorAuthClient --------------------------------------------


async def test_node_client_sets_up_and_confirms_totp_for_an_end_user(client):
    _, api_key = await account_with_key(client)
    user_id = random_user_id()
    setup = await run_node(client, "setupTOTP", api_key, userId=user_id)
    assert setup.get("success") is True, setup
    # The guide's usage line: const { qrCode, secret } = await tfaClient.setupTOTP('user-id');
    qr_code, secret = setup["qrCode"], setup["secret"]
    assert qr_code.startswith("data:image/"), qr_code[:40]
    assert secret and setup["data"]["secret"] == secret
    confirmed = await run_node(client, "verifyTOTP", api_key, userId=user_id, code=code_at(secret))
    assert confirmed.get("success") is True, confirmed
    assert len(confirmed["backupCodes"]) == 10, confirmed
    r = await client.get("/api/2fa/status", headers={"X-API-Key": api_key},
                         params={"userId": user_id})
    assert (await r.json())["enabled"] is True


async def test_node_client_completes_a_login_and_its_api_key_header_is_ignored(client):
    account, api_key = await account_with_key(client)
    enabled = await enable_totp(client, account.auth)
    temp_token = await temp_token_for(client, account)
    code = code_at(enabled["secret"])
    done = await run_node(client, "verify2FA", api_key, tempToken=temp_token, code=code)
    assert done.get("success") is True, done
    assert done["accessToken"] and done["data"]["accessToken"] == done["accessToken"]
    r = await client.get("/api/auth/me", headers={"Authorization": f"Bearer {done['accessToken']}"})
    assert r.status == 200, await r.text()
    assert (await r.json())["id"] == account.id


async def test_node_client_reports_a_wrong_login_code_as_401(client):
    account, api_key = await account_with_key(client)
    enabled = await enable_totp(client, account.auth)
    temp_token = await temp_token_for(client, account)
    code = wrong_code(enabled["secret"])
    failed = await run_node(client, "verify2FA", api_key, tempToken=temp_token, code=code)
    assert failed["error"] == 401, failed
    assert failed["body"]["error"]["code"] == "INVALID_CODE"


# --- Python: the guide's TwoFactorAuthClient -----------------------------------------------------


async def test_python_client_sets_up_totp_and_its_qr_code_prints(client, monkeypatch, capsys):
    _, api_key = await account_with_key(client)
    monkeypatch.setenv("TFA_API_KEY", api_key)
    user_id = random_user_id()
    # The guide's usage lines, with this test server's base URL instead of localhost:3001.
    guide_client = TwoFactorAuthClient(os.getenv("TFA_API_KEY"), base_url(client))
    result = await asyncio.to_thread(guide_client.setup_totp, user_id)
    capsys.readouterr()  # drop the server's request log lines
    print(f"QR Code: {result['data']['qrCode']}")
    assert capsys.readouterr().out.startswith("QR Code: data:image/")
    # The secret it returned is the one the service then checks codes against.
    r = await client.post("/api/2fa/totp/verify-setup", headers={"X-API-Key": api_key},
                          json={"userId": user_id, "code": code_at(result["data"]["secret"])})
    assert r.status == 200, await r.text()


async def test_python_client_completes_a_login(client):
    account, api_key = await account_with_key(client)
    enabled = await enable_totp(client, account.auth)
    temp_token = await temp_token_for(client, account)
    guide_client = TwoFactorAuthClient(api_key, base_url(client))
    code = code_at(enabled["secret"])
    result = await asyncio.to_thread(guide_client.verify_2fa, temp_token, code)
    assert result.get("success") is True, result
    assert result["data"]["accessToken"] and result["accessToken"] == result["data"]["accessToken"]
    access = {"Authorization": f"Bearer {result['accessToken']}"}
    r = await client.get("/api/auth/me", headers=access)
    assert r.status == 200, await r.text()


# --- Pattern 1: proxy integration, in Python -----------------------------------------------------


def pattern1_methods(base: str, api_key: str, user_id: str | None) -> requests.Response:
    """Step 2 of the guide's login route: GET /2fa/methods, as published or with userId added."""
    params = {"userId": user_id} if user_id is not None else None
    return requests.get(f"{base}/2fa/methods", params=params, headers={"X-API-Key": api_key},
                        timeout=30)


def pattern1_verify(base: str, api_key: str, user_id: str, code: str) -> requests.Response:
    """The guide's verify-2fa route: POST /2fa/verify {code, userId} with the API key."""
    return requests.post(
        f"{base}/2fa/verify",
        headers={"X-API-Key": api_key, "Content-Type": "application/json"},
        data=json.dumps({"code": code, "userId": user_id}),
        timeout=30,
    )


async def test_pattern_1_proxy_flow_with_the_methods_call_naming_the_user(client):
    _, api_key = await account_with_key(client)
    base, user_id = base_url(client), random_user_id()

    # The snippet as published (no userId) is refused, naming the missing field.
    r = await asyncio.to_thread(pattern1_methods, base, api_key, None)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and "userId" in error["message"], error

    # Corrected: a user without 2FA gets a session straight away ...
    r = await asyncio.to_thread(pattern1_methods, base, api_key, user_id)
    assert r.status_code == 200, r.text
    methods = r.json()["data"]
    assert len(methods) == 0

    # ... and once the user has TOTP, login requires the second factor.
    enabled = await enable_totp(client, {"X-API-Key": api_key}, user_id)
    r = await asyncio.to_thread(pattern1_methods, base, api_key, user_id)
    assert r.status_code == 200, r.text
    methods = r.json()["data"]
    assert len(methods) > 0 and [m["type"] for m in methods] == ["totp"]

    code = wrong_code(enabled["secret"])
    r = await asyncio.to_thread(pattern1_verify, base, api_key, user_id, code)
    assert r.status_code == 401, r.text
    assert not r.ok
    r = await asyncio.to_thread(pattern1_verify, base, api_key, user_id, code_at(enabled["secret"]))
    assert r.status_code == 200, r.text
    assert r.json()["data"]["verified"] is True


# --- An independent TOTP implementation ----------------------------------------------------------


async def test_a_code_from_oathtool_confirms_setup(client):
    _, api_key = await account_with_key(client)
    key, user_id = {"X-API-Key": api_key}, random_user_id()
    r = await client.post("/api/2fa/totp/setup", headers=key, json={"userId": user_id})
    assert r.status == 200, await r.text()
    secret = (await r.json())["secret"]
    r = await client.post("/api/2fa/totp/verify-setup", headers=key,
                          json={"userId": user_id, "code": await oathtool_code(secret)})
    assert r.status == 200, await r.text()
    assert len((await r.json())["backupCodes"]) == 10
