"""The notifier's handler: one `notification.sms` / `notification.email` command, one message.

Per command: open the sealed code, send it through the channel's provider, and record the
outcome in `notifications` ('sent' with the provider's id, 'retrying' or 'failed' with the
error). A passing provider failure raises `Transient` (the runtime retries it through the delay
queues; on the last delivery the row says 'failed'); a permanent one, an unconfigured provider
or a code that does not open raises `Permanent` (the DLQ).

Idempotency: a command whose row says 'sent' is acked without sending again. Delivery is still
at-least-once: if the process dies between the provider's answer and the row being written,
the redelivered command is sent a second time (neither Twilio nor SMTP can deduplicate it).
Logs name the destination masked and never hold the code.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import structlog
from pydantic import ValidationError

from shared.config import Settings
from shared.consumer import current_delivery
from shared.crypto import DecryptionFailed, SecretBox
from shared.errors import Permanent, Transient
from shared.events import Event, EventType, NotificationData
from shared.notifications import open_code

from notifier import messages, store
from notifier.mail import SmtpSender
from notifier.masks import mask
from notifier.providers import ProviderError
from notifier.sms import TwilioSender

logger = structlog.get_logger(__name__)

CHANNELS = {EventType.NOTIFICATION_SMS: "sms", EventType.NOTIFICATION_EMAIL: "email"}


class Notifier:
    """Sends notification commands through the configured providers (None: not configured)."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        box: SecretBox,
        *,
        sms: TwilioSender | None,
        mail: SmtpSender | None,
    ) -> None:
        self.product = settings.TOTP_ISSUER
        self.pool = pool
        self.box = box
        self.sms = sms
        self.mail = mail

    async def handle(self, event: Event) -> None:
        """Send the command's code once, record the outcome, or raise Transient/Permanent."""
        channel = CHANNELS.get(event.type)
        if channel is None:
            logger.warning("not a notification command; ignored")
            return
        try:
            data = NotificationData.model_validate(event.data)
        except ValidationError as exc:
            raise Permanent(
                f"malformed {event.type.value} command ({exc.error_count()} errors)"
            ) from None
        delivery = current_delivery()
        masked = mask(channel, data.to)
        log = logger.bind(channel=channel, to=masked, attempt=delivery.attempt)

        async def outcome(status: store.Status, **fields: str | None) -> None:
            async with self.pool.acquire() as conn:
                await store.record(
                    conn,
                    command_id=event.id,
                    owner_id=event.ownerId,
                    channel=channel,
                    masked_to=masked,
                    status=status,
                    **fields,
                )

        async with self.pool.acquire() as conn:
            if await store.status(conn, event.id) == "sent":
                log.info("notification already sent; not sending it again")
                return
        if event.occurredAt + timedelta(minutes=data.expiresInMinutes) <= datetime.now(UTC):
            # Nothing to retry and nothing for an operator to replay: the code is dead.
            await outcome("failed", error="the code expired before it could be sent")
            log.warning("notification dropped: code expired")
            return
        try:
            code = open_code(self.box, event.id, data.sealedCode)
        except (DecryptionFailed, ValueError):
            await outcome("failed", error="the sealed code does not open")
            raise Permanent("the sealed code does not open") from None

        try:
            provider_id = await self._send(channel, data, code)
        except ProviderError as exc:
            final = exc.permanent or delivery.final
            status: store.Status = "failed" if final else "retrying"
            await outcome(status, error=exc.detail)
            log.warning("notification not sent", status=status, error=exc.detail)
            if exc.permanent:
                raise Permanent(exc.detail) from None
            raise Transient(exc.detail) from None
        await outcome("sent", provider_id=provider_id)
        log.info("notification sent", provider_id=provider_id)

    async def _send(self, channel: str, data: NotificationData, code: str) -> str:
        if channel == "sms":
            if self.sms is None:
                raise ProviderError("sms provider not configured", permanent=True)
            return await self.sms.send(
                data.to, messages.sms_text(self.product, code, data.expiresInMinutes)
            )
        if self.mail is None:
            raise ProviderError("email provider not configured", permanent=True)
        content = messages.email_content(self.product, code, data.expiresInMinutes, data.purpose)
        return await self.mail.send(data.to, content)
