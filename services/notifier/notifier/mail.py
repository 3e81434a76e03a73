"""Email through SMTP with aiosmtplib: a plain-text part and an HTML alternative.

STARTTLS when `EMAIL_STARTTLS` (required then: a server that does not offer it is a permanent
failure rather than a silent plain-text send), implicit TLS on port 465, and a login when
`EMAIL_USER` is set. Each send is bounded by `NOTIFIER_SEND_TIMEOUT_SECONDS`. SMTP replies are
classified by their class: 5xx is permanent (unknown mailbox, refused sender, bad login), 4xx is
passing (greylisting, mailbox busy), and so are timeouts and connection errors.
"""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from email.utils import make_msgid, parseaddr

import aiosmtplib

from shared.config import Settings

from notifier.masks import scrub
from notifier.messages import EmailContent
from notifier.providers import ProviderError


class SmtpSender:
    """Sends one email and returns its Message-ID, or raises `ProviderError`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.timeout = settings.NOTIFIER_SEND_TIMEOUT_SECONDS

    async def close(self) -> None:
        """Nothing is held between sends (one SMTP session per message)."""

    async def send(self, to: str, content: EmailContent) -> str:
        message = self.build(to, content)
        s = self.settings
        implicit_tls = s.EMAIL_PORT == 465
        try:
            async with asyncio.timeout(self.timeout):
                await aiosmtplib.send(
                    message,
                    hostname=s.EMAIL_HOST,
                    port=s.EMAIL_PORT,
                    username=s.EMAIL_USER or None,
                    password=s.EMAIL_PASSWORD if s.EMAIL_USER else None,
                    use_tls=implicit_tls,
                    start_tls=s.EMAIL_STARTTLS and not implicit_tls,
                    timeout=self.timeout,
                )
        except (TimeoutError, aiosmtplib.SMTPTimeoutError):
            raise ProviderError(
                f"SMTP server did not answer in {self.timeout:g}s", permanent=False
            ) from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            raise _error(min(codes, default=451), detail) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _error(exc.code, exc.message) from None
        except aiosmtplib.SMTPNotSupported as exc:
            raise ProviderError(f"SMTP: {scrub(str(exc))}", permanent=True) from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise ProviderError(
                f"SMTP server unreachable: {scrub(str(exc))}", permanent=False
            ) from None
        return str(message["Message-ID"])

    def build(self, to: str, content: EmailContent) -> EmailMessage:
        """The MIME message: text/plain first, text/html as the preferred alternative."""
        message = EmailMessage()
        message["From"] = self.settings.EMAIL_FROM
        message["To"] = to
        message["Subject"] = content.subject
        # With no domain, make_msgid asks DNS for this host's name on every message.
        domain = parseaddr(self.settings.EMAIL_FROM)[1].rpartition("@")[2] or "localhost"
        message["Message-ID"] = make_msgid(domain=domain)
        message.set_content(content.text)
        message.add_alternative(content.html, subtype="html")
        return message


def _error(code: int, text: str) -> ProviderError:
    return ProviderError(f"SMTP {code}: {scrub(text)}", permanent=code >= 500, status=code)
