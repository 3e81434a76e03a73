"""SMS and email from the integrator's side: the API asks, the notifier sends through a local
Twilio-compatible server and a real SMTP server, and the code read from them completes setup
and then a login."""

from __future__ import annotations

import secrets
from typing import Any

import notifier.main

from tests.api_client import PASSWORD, create_key, login, new_account
from tests.conftest import make_settings
from tests.fakes.smtp_server import smtp_server
from tests.fakes.twilio_server import twilio_server
from tests.ids import random_user_id



def unique_phone() -> str:
    """A valid number no other test texts (leftover retries from other tests go elsewhere)."""
    return f"+1415555{secrets.randbelow(10_000):04d}"


async def start_notifier(**providers: Any):
    consumer = notifier.main.build(make_settings(**providers), health_port=0)
    await consumer.start()
    return consumer


async def test_sms_setup_and_verification_with_the_code_twilio_delivered(app_factory):
    async with twilio_server() as twilio:
        api = await app_factory(**twilio.settings())
        consumer = await start_notifier(**twilio.settings())
        try:
            account = await new_account(api)
            key = {"X-API-Key": (await create_key(api, account))["apiKey"]}
            user_id, phone = random_user_id(), unique_phone()
            r = await api.post("/api/2fa/sms/setup", json={"userId": user_id, "phoneNumber": phone}, headers=key)
            assert r.status == 200, await r.text()
            [setup] = await twilio.wait_for(1, to=phone)
            assert setup.from_ == twilio.phone_number
            r = await api.post("/api/2fa/sms/verify-setup", json={"userId": user_id, "code": setup.code}, headers=key)
            assert r.status == 200, await r.text()

            r = await api.post("/api/2fa/challenge", json={"userId": user_id, "method": "sms"}, headers=key)
            assert r.status == 200, await r.text()
            challenge = (await twilio.wait_for(2, to=phone))[1]
            assert challenge.code != setup.code
            r = await api.post("/api/2fa/verify", json={"userId": user_id, "code": challenge.code}, headers=key)
            assert r.status == 200, await r.text()
            assert (await r.json())["data"]["method"] == "sms"
        finally:
            await consumer.stop()


async def test_email_setup_and_a_direct_login_with_the_code_smtp_delivered(app_factory):
    async with smtp_server() as smtp:
        api = await app_factory(**smtp.settings())
        consumer = await start_notifier(**smtp.settings())
        try:
            account = await new_account(api)
            address = f"{account.username}@example.com"
            r = await api.post("/api/2fa/email/setup", json={"email": address}, headers=account.auth)
            assert r.status == 200, await r.text()
            [mail] = await smtp.wait_for(1, to=address)
            assert mail.text and mail.html and mail.code in mail.text and mail.code in mail.html
            r = await api.post("/api/2fa/email/verify-setup", json={"code": mail.code}, headers=account.auth)
            assert r.status == 200, await r.text()

            started = await login(api, account.username, PASSWORD)
            assert started["methods"] == ["email"]
            r = await api.post("/api/2fa/challenge", json={"tempToken": started["tempToken"], "method": "email"})
            assert r.status == 200, await r.text()
            second = (await smtp.wait_for(2, to=address))[1]
            r = await api.post("/api/2fa/verify", json={"tempToken": started["tempToken"], "code": second.code})
            assert r.status == 200, await r.text()
            assert (await r.json())["data"]["accessToken"]
        finally:
            await consumer.stop()
