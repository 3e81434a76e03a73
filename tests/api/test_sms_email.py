"""SMS and email 2FA at the API: setup and confirmation, login challenges, verification,
the code rules (attempts, cooldown, expiry) and the SMS pumping guard. The code is read from
the notification command the API hands the notifier (unsealed with the service's key); the
notifier's own tests, and tests/notifier, cover sending it."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import pytest

from shared.crypto import SecretBox
from shared.events import Event
from shared.notifications import open_code

from api.keys import CACHE

from tests.api_client import PASSWORD, create_key, error_code, login, new_account
from tests.conftest import BASE_SETTINGS
from tests.event_watch import EventWatcher, watch_events
from tests.ids import random_user_id

PROVIDERS: dict[str, Any] = {
    "TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16),
    "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
    "TWILIO_PHONE_NUMBER": "+15005550006",
    "EMAIL_HOST": "127.0.0.1",
}
PHONE = "+14155552671"


def code_in(command: Event) -> str:
    return open_code(SecretBox(BASE_SETTINGS["ENCRYPTION_KEY"]), command.id, command.data["sealedCode"])


async def sent_to(watcher: EventWatcher, destination: str, count: int = 1) -> list[Event]:
    def matching(events: list[Event]) -> list[Event]:
        return [e for e in events if e.type.value.startswith("notification.") and e.data["to"] == destination]

    await watcher.wait_for(lambda evs: len(matching(evs)) >= count)
    return matching(watcher.events)


@pytest.fixture
async def api(app_factory, request):
    overrides = getattr(request, "param", {})
    return await app_factory(**{**PROVIDERS, **overrides})


async def key_headers(client) -> dict[str, str]:
    account = await new_account(client)
    return {"X-API-Key": (await create_key(client, account))["apiKey"]}


async def test_sms_setup_sends_a_code_that_enables_sms(api, settings):
    key, user_id = await key_headers(api), random_user_id()
    async with watch_events(settings) as watcher:
        r = await api.post("/api/2fa/sms/setup", json={"userId": user_id, "phoneNumber": PHONE}, headers=key)
        assert r.status == 200, await r.text()
        body = (await r.json())["data"]
        assert body["pending"] is True and body["method"] == "sms"
        assert body["to"] == "+1 ******2671" and "expiresAt" in body
        [command] = await sent_to(watcher, PHONE)
        assert command.type.value == "notification.sms" and command.data["purpose"] == "setup"
        assert "code" not in command.data and len(code_in(command)) == 6

        r = await api.post("/api/2fa/sms/verify-setup", json={"userId": user_id, "code": code_in(command)}, headers=key)
        assert r.status == 200, await r.text()
        enabled = (await r.json())["data"]
        assert enabled["enabled"] is True and len(enabled["backupCodes"]) == 10
        await watcher.wait_for(lambda evs: any(e.type.value == "2fa.enabled" and e.userId == user_id for e in evs))
    event = next(e for e in watcher.events if e.type.value == "2fa.enabled" and e.userId == user_id)
    assert event.data == {"userId": user_id, "method": "sms"}

    r = await api.get("/api/2fa/methods", params={"userId": user_id}, headers=key)
    [method] = (await r.json())["data"]
    assert method["type"] == "sms" and method["phoneNumber"] == "+1 ******2671"
    r = await api.get("/api/2fa/status", params={"userId": user_id}, headers=key)
    assert (await r.json())["data"]["methods"] == ["sms"]


async def test_email_login_challenge_and_verify_complete_a_login(api, settings):
    account = await new_account(api)
    address = f"{account.username}@example.com"
    async with watch_events(settings) as watcher:
        await api.post("/api/2fa/email/setup", json={"email": address}, headers=account.auth)
        [setup] = await sent_to(watcher, address)
        r = await api.post("/api/2fa/email/verify-setup", json={"code": code_in(setup)}, headers=account.auth)
        assert r.status == 200, await r.text()

        started = await login(api, account.username, PASSWORD)
        assert started["requiresTwoFactor"] is True and started["methods"] == ["email"]
        r = await api.post("/api/2fa/challenge", json={"tempToken": started["tempToken"], "method": "email"})
        assert r.status == 200, await r.text()
        assert (await r.json())["data"]["to"] == f"{address[0]}***@example.com"
        login_command = (await sent_to(watcher, address, 2))[1]
        assert login_command.data["purpose"] == "login"
        r = await api.post("/api/2fa/verify", json={"tempToken": started["tempToken"], "code": code_in(login_command)})
        assert r.status == 200, await r.text()
        assert "accessToken" in (await r.json())["data"]
        await watcher.wait_for(lambda evs: any(e.type.value == "2fa.verified" and e.ownerId == uuid.UUID(account.id) for e in evs))
    verified = next(e for e in watcher.events if e.type.value == "2fa.verified" and e.ownerId == uuid.UUID(account.id))
    assert verified.data["method"] == "email"


async def test_an_api_key_challenges_and_verifies_its_users_sms_code(api, settings):
    key, user_id = await key_headers(api), random_user_id()
    await enable_sms(api, settings, key, user_id)
    async with watch_events(settings) as watcher:
        r = await api.post("/api/2fa/challenge", json={"userId": user_id, "method": "sms"}, headers=key)
        assert r.status == 200, await r.text()
        [command] = await sent_to(watcher, PHONE)
    r = await api.post("/api/2fa/verify", json={"userId": user_id, "code": "000000"}, headers=key)
    assert r.status == 401 and await error_code(r) == "INVALID_CODE"
    r = await api.post("/api/2fa/verify", json={"userId": user_id, "code": code_in(command)}, headers=key)
    assert (await r.json())["data"] == {**(await r.json())["data"], "verified": True, "method": "sms"}
    # used up: the same code again is refused
    r = await api.post("/api/2fa/verify", json={"userId": user_id, "code": code_in(command)}, headers=key)
    assert r.status == 401


async def enable_sms(api, settings, key, user_id: str, phone: str = PHONE) -> None:
    async with watch_events(settings) as watcher:
        r = await api.post("/api/2fa/sms/setup", json={"userId": user_id, "phoneNumber": phone}, headers=key)
        assert r.status == 200, await r.text()
        [command] = await sent_to(watcher, phone)
    r = await api.post("/api/2fa/sms/verify-setup", json={"userId": user_id, "code": code_in(command)}, headers=key)
    assert r.status == 200, await r.text()


@pytest.mark.parametrize("api", [{"CONTACT_CODE_RESEND_SECONDS": 0}], indirect=True)
async def test_five_wrong_codes_void_the_code_and_a_resend_does_not_reset_the_budget(api, settings):
    key, user_id = await key_headers(api), random_user_id()
    async with watch_events(settings) as watcher:
        await api.post("/api/2fa/sms/setup", json={"userId": user_id, "phoneNumber": PHONE}, headers=key)
        [first] = await sent_to(watcher, PHONE)
        right = code_in(first)
        wrong = "000000" if right != "000000" else "111111"
        for left in (4, 3, 2, 1, 0):
            r = await api.post("/api/2fa/sms/verify-setup", json={"userId": user_id, "code": wrong}, headers=key)
            assert r.status == 400
            assert (await r.json())["error"]["details"]["attemptsRemaining"] == left
        r = await api.post("/api/2fa/sms/verify-setup", json={"userId": user_id, "code": right}, headers=key)
        assert r.status == 429 and await error_code(r) == "TOO_MANY_ATTEMPTS" and "Retry-After" in r.headers
        # A resend brings a new code but no new tries.
        await api.post("/api/2fa/sms/setup", json={"userId": user_id, "phoneNumber": PHONE}, headers=key)
        second = (await sent_to(watcher, PHONE, 2))[1]
    r = await api.post("/api/2fa/sms/verify-setup", json={"userId": user_id, "code": code_in(second)}, headers=key)
    assert r.status == 429 and await error_code(r) == "TOO_MANY_ATTEMPTS"


async def test_a_resend_within_the_cooldown_is_refused_with_retry_after(api):
    key, user_id = await key_headers(api), random_user_id()
    body = {"userId": user_id, "phoneNumber": PHONE}
    assert (await api.post("/api/2fa/sms/setup", json=body, headers=key)).status == 200
    r = await api.post("/api/2fa/sms/setup", json=body, headers=key)
    assert r.status == 429 and await error_code(r) == "RESEND_TOO_SOON"
    assert 1 <= int(r.headers["Retry-After"]) <= 30


@pytest.mark.parametrize(
    "api", [{"SMS_DAILY_LIMIT_PER_USER": 2, "CONTACT_CODE_RESEND_SECONDS": 0}], indirect=True
)
async def test_the_daily_cap_per_user_refuses_and_is_audited(api, settings):
    key, user_id = await key_headers(api), random_user_id()
    body = {"userId": user_id, "phoneNumber": PHONE}
    async with watch_events(settings, pattern="security.send_refused") as watcher:
        for _ in range(2):
            assert (await api.post("/api/2fa/sms/setup", json=body, headers=key)).status == 200
        r = await api.post("/api/2fa/sms/setup", json=body, headers=key)
        assert r.status == 429 and await error_code(r) == "DAILY_LIMIT_REACHED"
        assert int(r.headers["Retry-After"]) <= 86401
        await watcher.wait_for(lambda evs: any(e.userId == user_id for e in evs))
    refused = next(e for e in watcher.events if e.userId == user_id)
    assert refused.data == {"userId": user_id, "channel": "sms", "reason": "daily_limit_user", "to": "+1 ******2671"}


@pytest.mark.parametrize(
    "api", [{"SMS_DAILY_LIMIT_PER_PHONE": 2, "CONTACT_CODE_RESEND_SECONDS": 0}], indirect=True
)
async def test_the_daily_cap_per_phone_number_holds_across_users_and_owners(api):
    for _ in range(2):
        key = await key_headers(api)
        r = await api.post("/api/2fa/sms/setup", json={"userId": random_user_id(), "phoneNumber": PHONE}, headers=key)
        assert r.status == 200
    key = await key_headers(api)
    r = await api.post("/api/2fa/sms/setup", json={"userId": random_user_id(), "phoneNumber": PHONE}, headers=key)
    assert r.status == 429 and (await r.json())["error"]["details"]["per"] == "phone number"
    # another number is fine
    r = await api.post("/api/2fa/sms/setup", json={"userId": random_user_id(), "phoneNumber": "+12025550123"}, headers=key)
    assert r.status == 200


@pytest.mark.parametrize(
    "api", [{"SMS_DAILY_LIMIT_PER_OWNER": 2, "CONTACT_CODE_RESEND_SECONDS": 0}], indirect=True
)
async def test_the_daily_cap_per_owner_holds_across_users(api):
    key = await key_headers(api)
    for phone in ("+14155552671", "+12025550123"):
        r = await api.post("/api/2fa/sms/setup", json={"userId": random_user_id(), "phoneNumber": phone}, headers=key)
        assert r.status == 200
    r = await api.post("/api/2fa/sms/setup", json={"userId": random_user_id(), "phoneNumber": "+447911123456"}, headers=key)
    assert r.status == 429 and (await r.json())["error"]["details"]["per"] == "account"


@pytest.mark.parametrize("api", [{"SMS_ALLOWED_COUNTRIES": [44, 49]}], indirect=True)
async def test_numbers_outside_the_allowed_countries_are_refused_and_audited(api, settings):
    key, user_id = await key_headers(api), random_user_id()
    async with watch_events(settings, pattern="security.send_refused") as watcher:
        r = await api.post("/api/2fa/sms/setup", json={"userId": user_id, "phoneNumber": PHONE}, headers=key)
        assert r.status == 400 and await error_code(r) == "SMS_COUNTRY_NOT_ALLOWED"
        await watcher.wait_for(lambda evs: any(e.userId == user_id for e in evs))
    assert watcher.events[-1].data["reason"] == "country_not_allowed"
    r = await api.post("/api/2fa/sms/setup", json={"userId": user_id, "phoneNumber": "+447911123456"}, headers=key)
    assert r.status == 200


@pytest.mark.parametrize(
    ("path", "body", "code", "field"),
    [
        ("/api/2fa/sms/setup", {"phoneNumber": "4155552671"}, "INVALID_PHONE_NUMBER", "phoneNumber"),
        ("/api/2fa/sms/setup", {"phoneNumber": "+1 415 555 2671"}, "INVALID_PHONE_NUMBER", "phoneNumber"),
        ("/api/2fa/sms/setup", {"phoneNumber": "+999123456"}, "INVALID_PHONE_NUMBER", "phoneNumber"),
        ("/api/2fa/sms/setup", {"phoneNumber": "+1415555267100000000000"}, "INVALID_PHONE_NUMBER", "phoneNumber"),
        ("/api/2fa/sms/setup", {}, "VALIDATION_ERROR", "phoneNumber"),
        ("/api/2fa/email/setup", {"email": "not-an-address"}, "VALIDATION_ERROR", "email"),
        ("/api/2fa/email/setup", {"email": "a@b"}, "VALIDATION_ERROR", "email"),
        ("/api/2fa/challenge", {"method": "carrier-pigeon"}, "VALIDATION_ERROR", "method"),
        ("/api/2fa/sms/verify-setup", {"code": ""}, "VALIDATION_ERROR", "code"),
    ],
)
async def test_bad_destinations_and_bodies_are_400_naming_the_field(api, path, body, code, field):
    key = await key_headers(api)
    r = await api.post(path, json={"userId": random_user_id(), **body}, headers=key)
    assert r.status == 400, await r.text()
    error = (await r.json())["error"]
    assert error["code"] == code
    assert field in [f["field"] for f in error["details"]["fields"]]


async def test_without_a_configured_provider_the_method_is_unavailable(client):
    key = await key_headers(client)
    for path, body in (("/api/2fa/sms/setup", {"phoneNumber": PHONE}), ("/api/2fa/email/setup", {"email": "a@example.com"})):
        r = await client.post(path, json={"userId": random_user_id(), **body}, headers=key)
        assert r.status == 400 and await error_code(r) == "METHOD_UNAVAILABLE"


async def test_a_challenge_for_a_method_the_user_does_not_have_is_refused(api):
    key, user_id = await key_headers(api), random_user_id()
    r = await api.post("/api/2fa/challenge", json={"userId": user_id, "method": "email"}, headers=key)
    assert r.status == 400 and await error_code(r) == "METHOD_NOT_ENABLED"
    r = await api.post("/api/2fa/challenge", json={"method": "sms"}, headers=key)
    assert r.status == 400  # an API key must name the user
    r = await api.post("/api/2fa/challenge", json={"tempToken": "not-a-token", "method": "sms"})
    assert r.status == 401


async def test_confirming_without_setup_or_after_the_code_expired(api, settings):
    key, user_id = await key_headers(api), random_user_id()
    r = await api.post("/api/2fa/sms/verify-setup", json={"userId": user_id, "code": "123456"}, headers=key)
    assert r.status == 409 and await error_code(r) == "SETUP_NOT_STARTED"
    await api.post("/api/2fa/sms/setup", json={"userId": user_id, "phoneNumber": PHONE}, headers=key)
    cache = api.server.app[CACHE]
    keys = [k async for k in cache.client.scan_iter(match=cache.key("otp", "*"))]
    await cache.client.delete(*keys)  # what ten minutes would do
    r = await api.post("/api/2fa/sms/verify-setup", json={"userId": user_id, "code": "123456"}, headers=key)
    assert r.status == 409 and await error_code(r) == "CODE_EXPIRED"


async def test_disabling_sms_emits_2fa_disabled_and_already_enabled_is_409(api, settings):
    key, user_id = await key_headers(api), random_user_id()
    await enable_sms(api, settings, key, user_id)
    r = await api.post("/api/2fa/sms/setup", json={"userId": user_id, "phoneNumber": PHONE}, headers=key)
    assert r.status == 409 and await error_code(r) == "ALREADY_ENABLED"
    async with watch_events(settings, pattern="2fa.disabled") as watcher:
        r = await api.delete("/api/2fa/methods/sms", params={"userId": user_id}, headers=key)
        assert r.status == 200, await r.text()
        await watcher.wait_for(lambda evs: any(e.userId == user_id for e in evs))
    assert watcher.events[-1].data == {"userId": user_id, "method": "sms"}
    r = await api.get("/api/2fa/methods", params={"userId": user_id}, headers=key)
    assert (await r.json())["data"] == []
