"""A local Twilio: an aiohttp app speaking the Messages API, in the test's event loop.

`POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (form-encoded `To`, `From`, `Body`, HTTP
Basic auth with the account SID and auth token) answers 201 with a Twilio-shaped message
(`sid` "SM" + 32 hex, `status` "queued") and records it. Errors answer Twilio's JSON shape
(`code`, `message`, `more_info`, `status`): 401/20003 for bad credentials, 404/20404 for another
account's URL, 400/21604, 21602, 21603 for a missing field, 400/21211 for a `To` that is not E.164.

Failure modes, settable while a test runs, apply to the next N message requests (those with
valid credentials), in order: `fail_next(n, status=500|429|400|...)` and `hang_next(n)` (no
answer until the server stops, for client timeouts). Twilio's magic test numbers fail as they
do with test credentials: +15005550001 (21211 invalid) and +15005550009 (21614 not a mobile).

Use: `async with twilio_server() as twilio: make_settings(**twilio.settings(), ...)`.
"""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

from aiohttp import web

API_VERSION = "2010-04-01"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
CODE = re.compile(r"\b(\d{6})\b")
DEFAULT_FROM = "+15005550006"
INVALID_NUMBER = "+15005550001"
NOT_MOBILE_NUMBER = "+15005550009"

# Twilio's own texts for the errors this fake produces (https://www.twilio.com/docs/errors).
ERRORS: dict[int, tuple[int, str]] = {
    20003: (401, "Authenticate"),
    20404: (404, "The requested resource {path} was not found"),
    20429: (429, "Too Many Requests"),
    20500: (500, "An internal server error has occurred"),
    21211: (400, "The 'To' number {to} is not a valid phone number."),
    21602: (400, "Message body is required."),
    21603: (400, "A 'From' phone number is required."),
    21604: (400, "A 'To' phone number is required."),
    21614: (400, "'To' number {to} is not a valid mobile number"),
}
# The error code a bare `fail_next(status=...)` answers with.
CODE_FOR_STATUS = {400: 21211, 401: 20003, 404: 20404, 429: 20429, 500: 20500}


@dataclass(frozen=True)
class SentSms:
    """One message Twilio accepted."""

    sid: str
    to: str
    from_: str
    body: str
    account_sid: str
    # The Basic auth username the request carried (the account SID when authenticated).
    auth_user: str
    received_at: float

    @property
    def code(self) -> str | None:
        """The first 6-digit run in the body."""
        found = CODE.search(self.body)
        return found.group(1) if found else None


@dataclass
class _Failure:
    status: int | None  # None: hang
    code: int | None
    message: str | None


@dataclass
class FakeTwilio:
    """The running fake: its URL, credentials, what it accepted, and its failure modes."""

    account_sid: str
    auth_token: str
    phone_number: str
    url: str = ""
    messages: list[SentSms] = field(default_factory=list)
    # Every request with valid credentials, accepted or not: (monotonic time, To, answered status).
    attempts: list[tuple[float, str, int | None]] = field(default_factory=list)
    unauthorized: int = 0
    _failures: list[_Failure] = field(default_factory=list)
    _arrival: asyncio.Event = field(default_factory=asyncio.Event)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    def settings(self) -> dict[str, str]:
        """Setting overrides that point a service at this fake."""
        return {
            "TWILIO_ACCOUNT_SID": self.account_sid,
            "TWILIO_AUTH_TOKEN": self.auth_token,
            "TWILIO_PHONE_NUMBER": self.phone_number,
            "TWILIO_API_BASE_URL": self.url,
        }

    def fail_next(
        self,
        times: int = 1,
        *,
        status: int = 500,
        code: int | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next `times` message requests with `status` and Twilio's error JSON
        (`code` defaults by status: 400 → 21211, 429 → 20429, 500 → 20500)."""
        code = code if code is not None else CODE_FOR_STATUS.get(status, status * 100)
        self._failures += [_Failure(status, code, message) for _ in range(times)]

    def hang_next(self, times: int = 1) -> None:
        """Leave the next `times` message requests unanswered until the server stops."""
        self._failures += [_Failure(None, None, None) for _ in range(times)]

    def clear_failures(self) -> None:
        self._failures.clear()

    def sent_to(self, to: str) -> list[SentSms]:
        """Messages accepted for `to`, oldest first."""
        return [m for m in self.messages if m.to == to]

    def last_code(self, to: str) -> str | None:
        """The 6-digit code in the last message accepted for `to`, if any."""
        sent = self.sent_to(to)
        return sent[-1].code if sent else None

    async def wait_for(
        self, count: int = 1, *, to: str | None = None, timeout: float = 10
    ) -> list[SentSms]:
        """Accepted messages (for `to`, if given) once at least `count` have arrived."""

        def matching() -> list[SentSms]:
            return [m for m in self.messages if to is None or m.to == to]

        try:
            async with asyncio.timeout(timeout):
                while len(matching()) < count:
                    self._arrival.clear()
                    await self._arrival.wait()
        except TimeoutError:
            raise AssertionError(
                f"expected {count} SMS{f' to {to}' if to else ''} within {timeout}s, "
                f"got {len(matching())}; attempts: {self.attempts}"
            ) from None
        return matching()

    # The aiohttp side

    async def _messages(self, request: web.Request) -> web.Response:
        path_sid = request.match_info["account_sid"]
        user = self._authenticated_user(request)
        if user is None:
            self.unauthorized += 1
            return _error(20003, request, headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})
        if path_sid != self.account_sid:
            return _error(20404, request)
        form = await request.post()
        to, from_, body = (str(form.get(name, "")) for name in ("To", "From", "Body"))
        if self._failures:
            failure = self._failures.pop(0)
            if failure.status is None:
                self.attempts.append((time.monotonic(), to, None))
                await self._closing.wait()
                return _error(20500, request, to=to)
            self.attempts.append((time.monotonic(), to, failure.status))
            return _error(
                failure.code or 20500,
                request,
                to=to,
                status=failure.status,
                message=failure.message,
            )
        refusal = _refusal(to, from_, body)
        if refusal is not None:
            self.attempts.append((time.monotonic(), to, 400))
            return _error(refusal, request, to=to)
        self.attempts.append((time.monotonic(), to, 201))
        sid = "SM" + secrets.token_hex(16)
        self.messages.append(
            SentSms(sid, to, from_, body, self.account_sid, user, time.monotonic())
        )
        self._arrival.set()
        return web.json_response(_message_json(self.account_sid, sid, to, from_, body), status=201)

    def _authenticated_user(self, request: web.Request) -> str | None:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            login, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        if scheme.lower() != "basic" or login != self.account_sid:
            return None
        return login if secrets.compare_digest(password, self.auth_token) else None


def _refusal(to: str, from_: str, body: str) -> int | None:
    if not to:
        return 21604
    if not from_:
        return 21603
    if not body:
        return 21602
    if to == NOT_MOBILE_NUMBER:
        return 21614
    if to == INVALID_NUMBER or not E164.match(to):
        return 21211
    return None


def _error(
    code: int,
    request: web.Request,
    *,
    to: str = "",
    status: int | None = None,
    message: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    default_status, text = ERRORS.get(code, (status or 500, "Error"))
    status = status or default_status
    body = {
        "code": code,
        "message": message or text.format(to=to, path=request.path),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }
    return web.json_response(body, status=status, headers=headers)


def _message_json(account_sid: str, sid: str, to: str, from_: str, body: str) -> dict[str, Any]:
    now = formatdate(usegmt=True)
    uri = f"/{API_VERSION}/Accounts/{account_sid}/Messages/{sid}"
    return {
        "account_sid": account_sid,
        "api_version": API_VERSION,
        "body": body,
        "date_created": now,
        "date_sent": None,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": from_,
        "messaging_service_sid": None,
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": "queued",
        "subresource_uris": {"media": f"{uri}/Media.json"},
        "to": to,
        "uri": f"{uri}.json",
    }


def new_account_sid() -> str:
    return "AC" + secrets.token_hex(16)


@asynccontextmanager
async def twilio_server(
    *,
    account_sid: str | None = None,
    auth_token: str | None = None,
    phone_number: str = DEFAULT_FROM,
) -> AsyncIterator[FakeTwilio]:
    """A fake Twilio on 127.0.0.1 (a free port) for the duration of the block."""
    fake = FakeTwilio(
        account_sid=account_sid or new_account_sid(),
        auth_token=auth_token or secrets.token_hex(16),
        phone_number=phone_number,
    )
    app = web.Application()
    app.router.add_post(f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json", fake._messages)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        # Let hanging requests finish (their clients have usually given up already).
        fake._closing.set()
        await runner.cleanup()
