"""The notifier sends each SMS or email command once, through the local Twilio and SMTP fakes,
records it in `notifications`, retries passing provider failures through the delay queues,
dead-letters permanent ones, and never logs a code or a full destination."""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import aio_pika
import asyncpg
import pytest_asyncio
import structlog
from structlog.testing import capture_logs

from shared import broker
from shared.config import Settings
from shared.consumer import Consumer
from shared.crypto import SecretBox
from shared.events import Actor, Event, EventType, NotificationData
from shared.logs import redact
from shared.notifications import seal_code

import notifier.main

from tests.event_watch import publish_events
from tests.conftest import RETRY_DELAYS, make_settings
from tests.fakes.smtp_server import FakeSmtp, smtp_server
from tests.fakes.twilio_server import FakeTwilio, twilio_server
from tests.ids import random_email
from tests.webhooks.helpers import eventually

SMS, EMAIL = EventType.NOTIFICATION_SMS, EventType.NOTIFICATION_EMAIL


def random_phone() -> str:
    return "+1555" + "".join(str(secrets.randbelow(10)) for _ in range(7))


def random_code() -> str:
    return f"{secrets.randbelow(900_000) + 100_000}"


def command(
    settings: Settings,
    type: EventType,
    to: str,
    code: str,
    *,
    purpose: Literal["setup", "login"] = "login",
    minutes: int = 10,
) -> Event:
    """A notification command as the API's outbox would publish it, its code sealed to its id."""
    command_id = uuid.uuid4()
    sealed = seal_code(SecretBox(settings.ENCRYPTION_KEY), command_id, code)
    return Event.build(
        type,
        NotificationData(to=to, purpose=purpose, sealedCode=sealed, expiresInMinutes=minutes),
        ownerId=uuid.uuid4(),
        userId="user-" + secrets.token_hex(4),
        actor=Actor(kind="system", id="test"),
        id=command_id,
    )


async def publish(settings: Settings, *events: Event) -> None:
    await publish_events(settings, list(events))


async def dlq_depth(settings: Settings) -> int:
    connection = await aio_pika.connect(settings.RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        name = broker.Topology(settings.BROKER_PREFIX).dlq(broker.NOTIFIER)
        queue = await channel.declare_queue(name, passive=True)
        return queue.declaration_result.message_count or 0


@asynccontextmanager
async def running_notifier(**overrides: Any) -> AsyncIterator[Consumer]:
    """A notifier in this process, with this run's settings and `overrides`."""
    consumer = notifier.main.build(make_settings(**overrides), health_port=0)
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


@asynccontextmanager
async def providers(**overrides: Any) -> AsyncIterator[tuple[FakeTwilio, FakeSmtp, Consumer]]:
    """Both fakes, and a notifier pointed at them."""
    async with (
        twilio_server() as twilio,
        smtp_server() as smtp,
        running_notifier(**twilio.settings(), **smtp.settings(), **overrides) as consumer,
    ):
        yield twilio, smtp, consumer


@pytest_asyncio.fixture
async def conn(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(settings.DATABASE_URL)
    yield connection
    await connection.close()


async def row_when(
    conn: asyncpg.Connection, event: Event, status: str, timeout: float = 10
) -> asyncpg.Record:
    """The command's `notifications` row once it has `status`."""

    async def check() -> asyncpg.Record | None:
        row = await conn.fetchrow("SELECT * FROM notifications WHERE id = $1", event.id)
        return row if row is not None and row["status"] == status else None

    return await eventually(check, timeout=timeout, interval=0.05)


async def dlq_grows_past(settings: Settings, before: int) -> None:
    async def grown() -> bool:
        return await dlq_depth(settings) > before

    await eventually(grown, timeout=10, interval=0.1)


# Delivery


async def test_an_sms_command_reaches_twilio_once_with_the_code_and_is_recorded_sent(
    settings, conn
):
    to, code = random_phone(), random_code()
    event = command(settings, SMS, to, code)
    async with providers() as (twilio, _, _):
        await publish(settings, event)
        [sms] = await twilio.wait_for(1, to=to)
        row = await row_when(conn, event, "sent")
    assert sms.body == f"Your {settings.TOTP_ISSUER} code is {code}. It expires in 10 minutes."
    assert twilio.last_code(to) == code
    assert sms.from_ == twilio.phone_number
    assert sms.auth_user == twilio.account_sid and twilio.unauthorized == 0
    assert sms.sid.startswith("SM") and len(sms.sid) == 34
    assert (row["provider_id"], row["attempts"], row["error"]) == (sms.sid, 1, None)
    assert (row["channel"], row["owner_id"]) == ("sms", event.ownerId)
    assert row["masked_to"] == "+*******" + to[-4:]


async def test_an_email_command_arrives_with_text_and_html_parts_and_is_recorded_sent(
    settings, conn
):
    to, code = random_email(), random_code()
    setup, login = (
        command(settings, EMAIL, to, code, purpose="setup"),
        command(settings, EMAIL, to, code),
    )
    async with (
        twilio_server() as twilio,
        smtp_server(username="mailer", password="s3cret-pass") as smtp,
        running_notifier(**twilio.settings(), **smtp.settings(), EMAIL_FROM="codes@tfa.test"),
    ):
        await publish(settings, setup)
        [first] = await smtp.wait_for(1, to=to)
        await publish(settings, login)
        second = (await smtp.wait_for(2, to=to))[1]
        row = await row_when(conn, login, "sent")
    for mail in (first, second):
        assert mail.message["From"] == "codes@tfa.test" and mail.mail_from == "codes@tfa.test"
        assert mail.message["To"] == to and mail.rcpt_tos == (to,)
        assert code in (mail.text or "") and code in (mail.html or "")
        assert mail.html is not None and mail.html.lstrip().startswith("<!DOCTYPE html>")
        assert mail.code == code
        assert mail.auth_user == "mailer"
    assert "Confirm your email address" in first.subject and "sign-in code" in second.subject
    assert settings.TOTP_ISSUER in first.subject and settings.TOTP_ISSUER in second.subject
    assert row["provider_id"] == second.message["Message-ID"] and row["attempts"] == 1
    assert row["masked_to"] == to[0] + "***@example.com"


async def test_a_redelivered_command_is_not_sent_twice(settings, conn):
    to = random_phone()
    event = command(settings, SMS, to, random_code())
    async with providers() as (twilio, _, consumer):
        await publish(settings, event)
        await row_when(conn, event, "sent")
        handled = consumer.handled
        await publish(settings, event)

        async def acked() -> bool:
            return consumer.handled > handled

        await eventually(acked, timeout=10, interval=0.05)
    assert len(twilio.sent_to(to)) == 1
    row = await row_when(conn, event, "sent")
    assert row["attempts"] == 1


# Passing failures: retried through the delay queues


async def test_twilio_5xx_is_retried_until_delivered_once(settings, conn):
    to = random_phone()
    event = command(settings, SMS, to, random_code())
    async with providers() as (twilio, _, _):
        twilio.fail_next(2, status=500)
        await publish(settings, event)
        row = await row_when(conn, event, "sent", timeout=15)
    assert len(twilio.sent_to(to)) == 1
    assert row["attempts"] == 3 and row["provider_id"] == twilio.sent_to(to)[0].sid
    tries = [t for t, number, _ in twilio.attempts if number == to]
    assert [s for _, n, s in twilio.attempts if n == to] == [500, 500, 201]
    # The delay queues' schedule, not an immediate requeue.
    assert tries[1] - tries[0] >= RETRY_DELAYS[0] * 0.9
    assert tries[2] - tries[1] >= RETRY_DELAYS[1] * 0.9


async def test_twilio_throttling_is_retried_and_recorded_retrying_meanwhile(settings, conn):
    to = random_phone()
    event = command(settings, SMS, to, random_code())
    async with providers() as (twilio, _, _):
        twilio.fail_next(1, status=429)
        await publish(settings, event)
        retrying = await row_when(conn, event, "retrying")
        row = await row_when(conn, event, "sent")
    assert "429" in retrying["error"] and "20429" in retrying["error"]
    assert row["attempts"] == 2 and len(twilio.sent_to(to)) == 1


async def test_provider_timeouts_are_retried(settings, conn):
    """Twilio and the SMTP server each hold one request unanswered past the send timeout."""
    phone, address = random_phone(), random_email()
    sms, mail = (
        command(settings, SMS, phone, random_code()),
        command(settings, EMAIL, address, random_code()),
    )
    async with providers(NOTIFIER_SEND_TIMEOUT_SECONDS=0.5) as (twilio, smtp, _):
        twilio.hang_next(1)
        smtp.hang_next(1)
        started = time.monotonic()
        await publish(settings, sms, mail)
        retrying = [await row_when(conn, event, "retrying") for event in (sms, mail)]
        assert time.monotonic() - started < 3
        rows = [await row_when(conn, event, "sent") for event in (sms, mail)]
    assert [r["error"] for r in retrying] == [
        "Twilio did not answer in 0.5s",
        "SMTP server did not answer in 0.5s",
    ]
    assert [r["attempts"] for r in rows] == [2, 2]
    assert len(twilio.sent_to(phone)) == 1 and len(smtp.sent_to(address)) == 1


async def test_twilio_failing_past_the_last_retry_ends_in_the_dlq_recorded_failed(settings, conn):
    to = random_phone()
    event = command(settings, SMS, to, random_code())
    before = await dlq_depth(settings)
    async with providers() as (twilio, _, _):
        twilio.fail_next(len(RETRY_DELAYS) + 1, status=503)
        await publish(settings, event)
        row = await row_when(conn, event, "failed", timeout=15)
        await dlq_grows_past(settings, before)
    assert row["attempts"] == len(RETRY_DELAYS) + 1 and "503" in row["error"]
    assert twilio.sent_to(to) == []


async def test_smtp_451_is_retried_then_delivered(settings, conn):
    to = random_email()
    event = command(settings, EMAIL, to, random_code())
    async with providers() as (_, smtp, _):
        smtp.fail_next(1, code=451, stage="rcpt")
        await publish(settings, event)
        retrying = await row_when(conn, event, "retrying")
        row = await row_when(conn, event, "sent")
    assert retrying["error"].startswith("SMTP 451")
    assert row["attempts"] == 2 and len(smtp.sent_to(to)) == 1


# Permanent failures: straight to the DLQ


async def test_an_invalid_number_goes_to_the_dlq_and_is_recorded_failed(settings, conn):
    to = random_phone()
    event = command(settings, SMS, to, random_code())
    before = await dlq_depth(settings)
    async with providers() as (twilio, _, _):
        twilio.fail_next(1, status=400)
        await publish(settings, event)
        row = await row_when(conn, event, "failed")
        await dlq_grows_past(settings, before)
    assert row["attempts"] == 1
    assert (
        "400" in row["error"]
        and "21211" in row["error"]
        and "not a valid phone number" in row["error"]
    )
    # Twilio's text names the number; the row keeps it masked.
    assert to not in row["error"] and to[-4:] in row["error"]
    assert [s for _, n, s in twilio.attempts if n == to] == [400]


async def test_a_rejected_recipient_goes_to_the_dlq_and_is_recorded_failed(settings, conn):
    to = random_email()
    event = command(settings, EMAIL, to, random_code())
    before = await dlq_depth(settings)
    async with providers() as (_, smtp, _):
        smtp.fail_next(1, code=550, stage="rcpt", text=f"5.1.1 <{to}>: Recipient address rejected")
        await publish(settings, event)
        row = await row_when(conn, event, "failed")
        await dlq_grows_past(settings, before)
    assert row["error"].startswith("SMTP 550") and to not in row["error"]
    assert smtp.sent_to(to) == [] and len([a for a in smtp.attempts if a[2] == to]) == 1


async def test_a_command_for_an_unconfigured_provider_goes_to_the_dlq(settings, conn):
    sms = command(settings, SMS, random_phone(), random_code())
    mail = command(settings, EMAIL, random_email(), random_code())
    before = await dlq_depth(settings)
    async with running_notifier(EMAIL_HOST=""):
        await publish(settings, sms, mail)
        rows = [await row_when(conn, event, "failed") for event in (sms, mail)]
        await dlq_grows_past(settings, before + 1)
    assert [r["error"] for r in rows] == [
        "sms provider not configured",
        "email provider not configured",
    ]


# Logs


async def test_codes_and_destinations_never_reach_the_logs(settings, conn, caplog):
    """Sent and refused SMS and emails: no log line holds a code, a number or an address."""
    caplog.set_level(logging.INFO)
    phone, bad_phone, address, bad_address = (
        random_phone(),
        random_phone(),
        random_email(),
        random_email(),
    )
    codes = [random_code() for _ in range(4)]
    events = [
        command(settings, SMS, phone, codes[0]),
        command(settings, SMS, bad_phone, codes[1]),
        command(settings, EMAIL, address, codes[2]),
        command(settings, EMAIL, bad_address, codes[3]),
    ]
    with capture_logs(processors=[structlog.contextvars.merge_contextvars, redact]) as entries:
        async with providers() as (twilio, smtp, _):
            await publish(settings, events[0])
            await row_when(conn, events[0], "sent")
            twilio.fail_next(1, status=400)
            await publish(settings, events[1])
            await row_when(conn, events[1], "failed")
            await publish(settings, events[2])
            await row_when(conn, events[2], "sent")
            smtp.fail_next(1, code=550, text=f"5.1.1 <{bad_address}>: Recipient address rejected")
            await publish(settings, events[3])
            await row_when(conn, events[3], "failed")
    # The fake SMTP server's own log is not the notifier's.
    records = [r for r in caplog.records if not r.name.startswith("mail.log")]
    lines = [json.dumps(e, default=str) for e in entries] + [r.getMessage() for r in records]
    # The capture saw the notifier's lines, masked (so an empty capture cannot pass).
    outcomes = [
        e for e in entries if e.get("event") in {"notification sent", "notification not sent"}
    ]
    assert {e["to"] for e in outcomes} == {
        "+*******" + phone[-4:],
        "+*******" + bad_phone[-4:],
        address[0] + "***@example.com",
        bad_address[0] + "***@example.com",
    }, entries
    for secret in (*codes, phone, bad_phone, address, bad_address):
        leaks = [line for line in lines if secret in line]
        assert not leaks, leaks
