"""Composition root of the notifier consumer: `build(settings)` is used by `__main__` and tests.

It takes `notification.sms` / `notification.email` commands from its queue and sends them
through Twilio and SMTP; a provider whose settings are missing is simply not built, and
commands for it fail permanently (DLQ) rather than wait for a configuration that may never come.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import structlog

from shared import broker, db
from shared.config import Settings
from shared.consumer import Consumer, Handler
from shared.crypto import SecretBox
from shared.health import Health

from notifier.handlers import Notifier
from notifier.mail import SmtpSender
from notifier.sms import TwilioSender

log = structlog.get_logger(__name__)


def build(settings: Settings, *, health_port: int | None = None) -> Consumer:
    """The notifier consumer with its queue, providers, handler and health port."""

    async def setup(stack: AsyncExitStack, health: Health) -> Handler:
        pool = await stack.enter_async_context(db.create_pool(settings))
        health.register("database", lambda: db.ping(pool))
        sms = mail = None
        if settings.twilio_configured:
            sms = TwilioSender(settings)
            stack.push_async_callback(sms.close)
        if settings.email_configured:
            mail = SmtpSender(settings)
            stack.push_async_callback(mail.close)
        log.info("notifier providers", sms=sms is not None, email=mail is not None)
        notifier = Notifier(settings, pool, SecretBox(settings.ENCRYPTION_KEY), sms=sms, mail=mail)
        return notifier.handle

    return Consumer(
        settings,
        broker.NOTIFIER,
        setup,
        health_port=settings.NOTIFIER_HEALTH_PORT if health_port is None else health_port,
        retry_delays=settings.CONSUMER_RETRY_DELAYS,
    )
