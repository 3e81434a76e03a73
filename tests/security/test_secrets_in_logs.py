"""No secret, code or token that a flow shows its user reaches a log line or the event stream.

One full flow runs through the API, the notifier (a fake Twilio, an SMTP server with a login)
and the webhook dispatcher (a receiver that keeps the signature), with structlog captured through
the services' own processor chain (`shared.logs.processors`, redaction included, only the
renderer left out) and the standard library's records at DEBUG. Every value the flow saw in a
response, a delivered message or a setting is then looked for in every captured line and in
every event the API wrote to its outbox (what the broker, the audit trail and webhooks get).

tests/api/test_tokens.py checks passwords, tokens and API keys in a smaller flow; this one adds
TOTP secrets, codes of every kind, backup codes, device and temp tokens, webhook secrets and
signatures, SMS/email codes and provider credentials, and the consumers' logs.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Any

from structlog.testing import capture_logs

from shared.logs import processors

import notifier.main

from tests.api_client import PASSWORD, create_key, login, new_account
from tests.conftest import make_settings
from tests.fakes.smtp_server import smtp_server
from tests.fakes.twilio_server import twilio_server
from tests.ids import random_user_id
from tests.security.raw_receiver import raw_receiver
from tests.totp_helpers import code_at, enable_totp
from tests.webhooks.helpers import create_webhook, running_dispatcher

# Records of the test's own fakes (aiosmtpd logs whole SMTP sessions at DEBUG), not a service's.
FAKES_LOGGERS = ("mail.log",)


class Seen:
    """Every secret value the flow was shown."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, *values: Any) -> None:
        for value in values:
            if isinstance(value, (list, tuple)):
                self.add(*value)
            elif value:
                self.values.add(str(value))

    def found_in(self, text: str) -> list[str]:
        """The values that occur in `text` (backup codes also without their hyphen)."""
        return [v for v in self.values if _occurs(v, text) or _occurs(v.replace("-", ""), text)]


def _occurs(value: str, text: str) -> bool:
    # Short values (codes) only as whole words: any six digits can occur inside a longer number.
    if len(value) >= 16:
        return value in text
    return re.search(rf"(?<![0-9A-Za-z]){re.escape(value)}(?![0-9A-Za-z])", text) is not None


async def ok(response: Any, status: int = 200) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, text
    return json.loads(text)


async def flow(api: Any, twilio: Any, smtp: Any, rx: Any, seen: Seen) -> str:
    """Everything a user does that shows a secret; returns the owner's id."""
    account = await new_account(api)
    seen.add(PASSWORD, account.access_token, account.refresh_token)
    wrong = PASSWORD + "-wrong"
    r = await api.post("/api/auth/login", json={"emailOrUsername": account.username, "password": wrong})
    assert r.status == 401
    seen.add(wrong)

    r = await api.post("/api/2fa/totp/setup", json={}, headers=account.auth)
    setup = (await ok(r))["data"]
    seen.add(setup["secret"], setup["otpauthUrl"])
    code = code_at(setup["secret"], -1)
    r = await api.post("/api/2fa/totp/verify-setup", json={"code": code}, headers=account.auth)
    seen.add(code, (await ok(r))["data"]["backupCodes"])
    started = await login(api, account.username)
    r = await api.post("/api/2fa/verify", json={"tempToken": started["tempToken"], "code": "000000"})
    assert r.status == 401
    code = code_at(setup["secret"])
    body = {"tempToken": started["tempToken"], "code": code, "rememberDevice": True}
    r = await api.post("/api/2fa/verify", json=body)
    done = (await ok(r))["data"]
    seen.add(started["tempToken"], code, done["accessToken"], done["refreshToken"], done["deviceToken"])
    r = await api.post("/api/auth/login", json={"emailOrUsername": account.username, "password": PASSWORD,
                                                 "deviceToken": done["deviceToken"]})
    again = (await ok(r))["data"]
    r = await api.post("/api/auth/refresh", json={"refreshToken": again["refreshToken"]})
    rotated = (await ok(r))["data"]
    seen.add(again["accessToken"], again["refreshToken"], rotated["accessToken"], rotated["refreshToken"])

    key = await create_key(api, account, scopes=["*"])
    r = await api.post(f"/api/api-keys/{key['id']}/rotate", json={}, headers=account.auth)
    new_key = (await ok(r))["data"]["apiKey"]
    seen.add(key["apiKey"], new_key)
    headers = {"X-API-Key": new_key}
    user = random_user_id()
    enabled = await enable_totp(api, headers, user)
    seen.add(enabled["secret"], enabled["backupCodes"], code_at(enabled["secret"], -1))
    body = {"userId": user, "code": enabled["backupCodes"][0]}
    r = await api.post("/api/2fa/verify", json=body, headers=headers)
    await ok(r)
    r = await api.post("/api/2fa/backup-codes", json={"userId": user}, headers=headers)
    seen.add((await ok(r))["data"]["backupCodes"])

    phone, address = f"+1415555{secrets.randbelow(10_000):04d}", f"{random_user_id()}@example.com"
    r = await api.post("/api/2fa/sms/setup", json={"userId": user, "phoneNumber": phone}, headers=headers)
    await ok(r)
    sms = (await twilio.wait_for(1, to=phone))[0].code
    r = await api.post("/api/2fa/sms/verify-setup", json={"userId": user, "code": sms}, headers=headers)
    await ok(r)
    r = await api.post("/api/2fa/email/setup", json={"userId": user, "email": address}, headers=headers)
    await ok(r)
    mail = (await smtp.wait_for(1, to=address))[0].code
    r = await api.post("/api/2fa/email/verify-setup", json={"userId": user, "code": mail}, headers=headers)
    await ok(r)
    seen.add(sms, mail)

    hook = await create_webhook(api, account.auth, rx.url + "/hook", ["webhook.test"])
    r = await api.post(f"/api/webhooks/{hook['id']}/rotate-secret", json={}, headers=account.auth)
    seen.add(hook["secret"], (await ok(r))["data"]["secret"])
    r = await api.post(f"/api/webhooks/{hook['id']}/test", headers=account.auth)
    await ok(r, 202)
    [delivery] = await rx.wait_for(1)
    seen.add(delivery.header("x-webhook-signature"))

    r = await api.post("/api/auth/logout", json={"refreshToken": rotated["refreshToken"]},
                       headers={"Authorization": f"Bearer {rotated['accessToken']}"})
    await ok(r)
    r = await api.delete("/api/2fa/methods/totp", json={"password": PASSWORD}, headers=account.auth)
    await ok(r)
    return account.id


async def test_no_secret_or_code_reaches_a_log_line_or_an_event(app_factory, settings, db, caplog):
    caplog.set_level(logging.DEBUG)
    seen = Seen()
    smtp_login = {"username": "mailer", "password": secrets.token_urlsafe(16)}
    chain = processors(make_settings(LOG_FORMAT="json"))[:-1]
    async with twilio_server() as twilio, smtp_server(**smtp_login) as smtp, raw_receiver() as rx:
        providers = {**twilio.settings(), **smtp.settings()}
        seen.add(providers["TWILIO_AUTH_TOKEN"], smtp_login["password"])
        seen.add(*(getattr(settings, n) for n in
                   ("JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET", "DEVICE_TOKEN_SECRET", "ENCRYPTION_KEY")))
        with capture_logs(processors=chain) as entries:
            api = await app_factory(**providers)
            consumer = notifier.main.build(make_settings(**providers), health_port=0)
            await consumer.start()
            try:
                async with running_dispatcher():
                    owner_id = await flow(api, twilio, smtp, rx, seen)
            finally:
                await consumer.stop()

    events = {e.get("event") for e in entries}
    # The capture saw all three services at work (an empty capture must not pass).
    assert {"request", "notification sent", "webhook attempt"} <= events, events
    lines = [json.dumps(e, default=str) for e in entries]
    records = [r for r in caplog.records if r.name not in FAKES_LOGGERS]
    lines += [f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in records]
    leaks = {line: seen.found_in(line) for line in lines if seen.found_in(line)}
    assert not leaks, leaks

    rows = await db.fetch(
        """SELECT type, convert_from(body, 'UTF8') AS body FROM outbox
           WHERE position($1 in convert_from(body, 'UTF8')) > 0""",
        owner_id,
    )
    assert len(rows) > 10
    leaks = {r["type"]: seen.found_in(r["body"]) for r in rows if seen.found_in(r["body"])}
    assert not leaks, leaks
