"""Every program in examples/, Node and Python alike, run as a user would run it (a subprocess with
TFA_API_KEY and TFA_BASE_URL) against a live API: the client's enrollment script, Pattern 1's proxy
app (over HTTP on its own port) and Pattern 2's login script. Both languages share one command
line and output, so each test runs once per language. Subprocesses are asyncio ones: the test's
event loop is also the one serving the API. `make test` installs examples/node's Express."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient

from tests.api_client import PASSWORD, create_key, new_account
from tests.ids import random_email, random_user_id
from tests.ports import free_port
from tests.totp_helpers import code_at, enable_totp, wrong_code

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PROGRAMS = {
    "node": {"enroll": "enroll.js", "proxy": "proxy-app.js", "login": "direct-login.js"},
    "python": {"enroll": "enroll.py", "proxy": "proxy_app.py", "login": "direct_login.py"},
}
INTERPRETERS = {"node": "node", "python": sys.executable}
TIMEOUT = 30
LINE_LIMIT = 1 << 20  # the QR code's data URI is one long line
TOKEN = re.compile(r"Access token: (\S+)")


@dataclass
class Service:
    """The live API, and an account's API key for it, as the examples take them (environment)."""

    client: TestClient
    api_key: str

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "TFA_API_KEY": self.api_key,
                "TFA_BASE_URL": str(self.client.make_url("/api")), "PYTHONUNBUFFERED": "1"}

    @property
    def key(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(params=["node", "python"])
def lang(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest_asyncio.fixture
async def service(client: TestClient) -> Service:
    return Service(client, (await create_key(client, await new_account(client)))["apiKey"])


async def start(
    lang: str, program: str, *args: str, env: dict[str, str]
) -> asyncio.subprocess.Process:
    # A new session has no controlling terminal, so Python's getpass reads the piped stdin.
    return await asyncio.create_subprocess_exec(
        INTERPRETERS[lang], PROGRAMS[lang][program], *args, cwd=EXAMPLES / lang, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, limit=LINE_LIMIT, start_new_session=True,
    )


async def finish(proc: asyncio.subprocess.Process, stdin: str = "") -> Finished:
    """Write the rest of stdin, close it and wait for the program to end."""
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Finished(proc.returncode, out.decode(), err.decode())


async def run(lang: str, program: str, *args: str, env: dict[str, str], stdin: str) -> Finished:
    return await finish(await start(lang, program, *args, env=env), stdin)


async def read_until(proc: asyncio.subprocess.Process, prefix: str) -> list[str]:
    """stdout lines up to and including the first that starts with `prefix`."""
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []
    while not (lines and lines[-1].startswith(prefix)):
        line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)
        if not line:
            pytest.fail(f"no line {prefix!r} before exit; stdout {lines}, stderr "
                        f"{(await proc.stderr.read()).decode()}")
        lines.append(line.decode().rstrip("\n"))
    return lines


# --- The client: enroll.js / enroll.py ------------------------------------------------------------


async def test_enrollment_shows_a_qr_code_and_secret_then_backup_codes(lang, service):
    user_id = random_user_id()
    proc = await start(lang, "enroll", user_id, env=service.env)
    qr_line, secret_line = (await read_until(proc, "Secret"))[-2:]
    assert re.search(r": data:image/(png;base64|svg\+xml)", qr_line), qr_line[:80]
    secret = secret_line.rsplit(" ", 1)[1]
    done = await finish(proc, code_at(secret) + "\n")
    assert done.returncode == 0, done.stderr
    listed = done.stdout.split("Backup codes", 1)[1].splitlines()[1:]
    backup_codes = [line.strip() for line in listed if line.strip()]
    assert len(set(backup_codes)) == 10, done.stdout
    r = await service.client.get("/api/2fa/status", headers=service.key, params={"userId": user_id})
    assert (await r.json())["enabled"] is True
    # A printed backup code is one the service accepts.
    r = await service.client.post("/api/2fa/verify", headers=service.key,
                                  json={"userId": user_id, "code": backup_codes[0]})
    assert r.status == 200, await r.text()


async def test_enrollment_with_a_wrong_code_fails_naming_the_error_and_leaves_2fa_off(
    lang, service
):
    user_id = random_user_id()
    proc = await start(lang, "enroll", user_id, env=service.env)
    secret = (await read_until(proc, "Secret"))[-1].rsplit(" ", 1)[1]
    done = await finish(proc, wrong_code(secret) + "\n")
    assert done.returncode == 1, done.stdout
    assert "Enrollment failed: INVALID_CODE" in done.stderr, done.stderr
    assert "Backup codes" not in done.stdout
    r = await service.client.get("/api/2fa/status", headers=service.key, params={"userId": user_id})
    assert (await r.json())["enabled"] is False


# --- Pattern 1: proxy-app.js / proxy_app.py ------------------------------------------------------

@dataclass
class ProxyApp:
    url: str
    proc: asyncio.subprocess.Process
    http: aiohttp.ClientSession

    async def post(self, path: str, body: Any) -> tuple[int, dict[str, Any], Any]:
        """POST a JSON body (a str is sent as it is); the status, JSON body and headers."""
        data = body if isinstance(body, str) else json.dumps(body)
        headers = {"Content-Type": "application/json"}
        async with self.http.post(self.url + path, data=data, headers=headers) as r:
            return r.status, await r.json(), r.headers

    async def register(self) -> tuple[str, str]:
        """A new user of the app: email, and the app's id for it (its userId at the service)."""
        email = random_email()
        status, body, _ = await self.login(email, path="/api/auth/register")
        assert status == 201, body
        return email, body["user"]["id"]

    async def login(
        self, email: str, password: str = PASSWORD, path: str = "/api/auth/login"
    ) -> tuple[int, dict[str, Any], Any]:
        return await self.post(path, {"email": email, "password": password})

    async def verify(self, **body: str) -> tuple[int, dict[str, Any], Any]:
        return await self.post("/api/auth/verify-2fa", body)


@pytest_asyncio.fixture
async def start_proxy(lang: str) -> AsyncIterator[Callable[[dict[str, str]], Awaitable[ProxyApp]]]:
    """Start the proxy app with an environment; stopped (and its output checked) afterwards."""
    procs: list[asyncio.subprocess.Process] = []
    http = aiohttp.ClientSession()

    async def run_proxy(env: dict[str, str]) -> ProxyApp:
        if lang == "node" and not (EXAMPLES / "node" / "node_modules" / "express").is_dir():
            pytest.fail("express is not installed in examples/node: run `make test` (npm ci)")
        port = free_port()
        proc = await start(lang, "proxy", env={**env, "PORT": str(port)})
        procs.append(proc)
        assert proc.stdout is not None
        # Both print their address once listening ("Listening on ...", "Running on ...").
        line = ""
        while f":{port}" not in line:
            line = (await asyncio.wait_for(proc.stdout.readline(), TIMEOUT)).decode()
            assert line, f"the proxy app exited: {await finish(proc)}"
        return ProxyApp(f"http://127.0.0.1:{port}", proc, http)

    yield run_proxy
    await http.close()
    for proc in procs:
        if proc.returncode is None:
            proc.terminate()
        await finish(proc)


async def test_proxy_login_gives_a_session_at_once_to_a_user_without_2fa(service, start_proxy):
    app = await start_proxy(service.env)
    email, user_id = await app.register()

    status, body, _ = await app.login(email)
    assert status == 200, body
    assert "requiresTwoFactor" not in body and body["sessionToken"], body
    assert body["user"] == {"id": user_id, "email": email}  # no password hash

    for status, body, _ in (await app.login(email, "not the password"),
                            await app.login(random_email())):
        assert status == 401 and "sessionToken" not in body, body
    status, body, _ = await app.post("/api/auth/login", "{not json")
    assert status == 400, body


async def test_proxy_login_asks_a_user_with_2fa_for_the_code_first(service, start_proxy):
    app = await start_proxy(service.env)
    email, user_id = await app.register()
    secret = (await enable_totp(service.client, service.key, user_id))["secret"]

    status, body, _ = await app.login(email)
    assert status == 200, body
    assert body["requiresTwoFactor"] is True and body["methods"] == ["totp"], body
    assert "sessionToken" not in body
    login_token = body["loginToken"]

    # The guide's request (userId + code, no proof of the password) gets no session.
    status, body, _ = await app.verify(userId=user_id, code=code_at(secret))
    assert status == 401 and "sessionToken" not in body, body
    status, body, _ = await app.verify(loginToken=login_token, code=wrong_code(secret))
    assert status == 401 and body["code"] == "INVALID_CODE", body
    status, body, _ = await app.verify(loginToken=login_token, code=code_at(secret))
    assert status == 200 and body["sessionToken"], body
    # The pending login is used up.
    status, body, _ = await app.verify(loginToken=login_token, code=code_at(secret, 1))
    assert status == 401 and "sessionToken" not in body, body


async def test_proxy_tells_a_locked_user_when_to_retry(service, start_proxy):
    """After 5 wrong codes the service locks the user: the app answers 429 with Retry-After."""
    app = await start_proxy(service.env)
    email, user_id = await app.register()
    secret = (await enable_totp(service.client, service.key, user_id))["secret"]
    login_token = (await app.login(email))[1]["loginToken"]
    for _ in range(5):
        status, body, _ = await app.verify(loginToken=login_token, code=wrong_code(secret))
        assert status == 401, body
    status, body, headers = await app.verify(loginToken=login_token, code=code_at(secret))
    assert status == 429 and "sessionToken" not in body, body
    assert int(headers["Retry-After"]) > 0


async def test_proxy_logs_nobody_in_while_the_2fa_service_is_unreachable(service, start_proxy):
    app = await start_proxy({**service.env, "TFA_BASE_URL": f"http://127.0.0.1:{free_port()}/api"})
    email, _ = await app.register()
    for _ in range(2):  # the app survives the failure
        status, body, _ = await app.login(email)
        assert status == 502 and "sessionToken" not in body, body
    assert app.proc.returncode is None


# --- Pattern 2: direct-login.js / direct_login.py ------------------------------------------------


async def assert_token_is_for(service: Service, done: Finished, account_id: str) -> None:
    assert done.returncode == 0, done.stderr
    match = TOKEN.search(done.stdout)
    assert match, done.stdout
    r = await service.client.get("/api/auth/me", headers={"Authorization": f"Bearer {match[1]}"})
    assert r.status == 200, await r.text()
    assert (await r.json())["id"] == account_id


async def test_direct_login_with_2fa_returns_an_access_token_after_the_code(lang, service):
    account = await new_account(service.client)
    secret = (await enable_totp(service.client, account.auth))["secret"]
    done = await run(lang, "login", account.username, env=service.env,
                     stdin=f"{PASSWORD}\n{code_at(secret)}\n")
    assert "2FA code (totp or a backup code)" in done.stdout
    await assert_token_is_for(service, done, account.id)


async def test_direct_login_accepts_a_backup_code(lang, service):
    account = await new_account(service.client)
    backup_code = (await enable_totp(service.client, account.auth))["backupCodes"][0]
    stdin = f"{PASSWORD}\n{backup_code}\n"
    done = await run(lang, "login", account.email, env=service.env, stdin=stdin)
    await assert_token_is_for(service, done, account.id)


async def test_direct_login_without_2fa_asks_for_no_code(lang, service):
    account = await new_account(service.client)
    done = await run(lang, "login", account.username, env=service.env, stdin=f"{PASSWORD}\n")
    assert "2FA code" not in done.stdout
    await assert_token_is_for(service, done, account.id)


async def test_direct_login_fails_naming_a_wrong_code_or_password(lang, service):
    account = await new_account(service.client)
    secret = (await enable_totp(service.client, account.auth))["secret"]
    for stdin, error in ((f"{PASSWORD}\n{wrong_code(secret)}\n", "INVALID_CODE"),
                         ("not the password\n", "INVALID_CREDENTIALS")):
        done = await run(lang, "login", account.username, env=service.env, stdin=stdin)
        assert done.returncode == 1, done.stdout
        assert f"Login failed: {error}" in done.stderr, done.stderr
        assert not TOKEN.search(done.stdout)
