"""A local SMTP server (aiosmtpd's protocol) that records what it is sent, in the test's event loop.

It listens on 127.0.0.1 (a free port) without TLS, so point services at it with
`EMAIL_STARTTLS=false` (`FakeSmtp.settings()` does). Each accepted message is kept as a parsed
`email.message.EmailMessage` with its envelope. With `username`/`password` it offers AUTH
(PLAIN/LOGIN over the plain connection, fine on loopback) and records who logged in; a wrong
login gets 535.

Failure modes, settable while a test runs, apply to the next N RCPT or DATA commands, in order:
`fail_next(n, code=451|550|..., stage="rcpt"|"data")` and `hang_next(n)` (DATA gets no answer
until the server stops, for client timeouts).

It runs in the caller's event loop rather than in aiosmtpd's `Controller` thread, so it binds
port 0 directly and stops with the block, connections included.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

CODE = re.compile(r"\b(\d{6})\b")
Stage = Literal["rcpt", "data"]
DEFAULT_TEXTS = {
    421: "4.3.2 Service not available, closing transmission channel",
    450: "4.2.1 Mailbox temporarily unavailable",
    451: "4.3.0 Requested action aborted: try again later",
    452: "4.5.3 Too many recipients",
    550: "5.1.1 Mailbox unavailable: no such user",
    552: "5.3.4 Message size exceeds fixed limit",
    554: "5.7.1 Message rejected",
}


@dataclass(frozen=True)
class ReceivedMail:
    """One message the server accepted."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    # The AUTH login the session used, if any.
    auth_user: str | None
    received_at: float

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str | None:
        """The text/plain body, if the message has one."""
        return _part(self.message, "plain")

    @property
    def html(self) -> str | None:
        """The text/html body, if the message has one."""
        return _part(self.message, "html")

    @property
    def code(self) -> str | None:
        """The first 6-digit run in the text part (or the HTML part)."""
        found = CODE.search(self.text or self.html or "")
        return found.group(1) if found else None


def _part(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_subtype() != subtype:
        return None
    return str(part.get_content())


@dataclass
class _Failure:
    stage: Stage
    code: int | None  # None: hang
    text: str


@dataclass
class FakeSmtp:
    """The running server: its address, what it accepted, and its failure modes."""

    host: str = "127.0.0.1"
    port: int = 0
    username: str | None = None
    password: str | None = None
    messages: list[ReceivedMail] = field(default_factory=list)
    # Every RCPT and DATA answered: (monotonic time, stage, recipient(s), reply code or None).
    attempts: list[tuple[float, Stage, str, int | None]] = field(default_factory=list)
    _failures: list[_Failure] = field(default_factory=list)
    _arrival: asyncio.Event = field(default_factory=asyncio.Event)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Setting overrides that point a service at this server (plain SMTP, no STARTTLS)."""
        values: dict[str, Any] = {
            "EMAIL_HOST": self.host,
            "EMAIL_PORT": self.port,
            "EMAIL_STARTTLS": False,
            "EMAIL_USER": self.username or "",
            "EMAIL_PASSWORD": self.password or "",
        }
        return {**values, **overrides}

    def fail_next(
        self, times: int = 1, *, code: int = 451, stage: Stage = "rcpt", text: str | None = None
    ) -> None:
        """Answer the next `times` RCPT (or DATA) commands with `code` (4xx: later; 5xx: never)."""
        text = text or DEFAULT_TEXTS.get(code, "Requested action not taken")
        self._failures += [_Failure(stage, code, text) for _ in range(times)]

    def hang_next(self, times: int = 1) -> None:
        """Leave the next `times` DATA commands unanswered until the server stops."""
        self._failures += [_Failure("data", None, "") for _ in range(times)]

    def clear_failures(self) -> None:
        self._failures.clear()

    def sent_to(self, address: str) -> list[ReceivedMail]:
        """Messages accepted for `address` (case-insensitive), oldest first."""
        wanted = address.lower()
        return [m for m in self.messages if wanted in (r.lower() for r in m.rcpt_tos)]

    def last_to(self, address: str) -> ReceivedMail | None:
        """The last message accepted for `address`, if any."""
        sent = self.sent_to(address)
        return sent[-1] if sent else None

    def last_code(self, address: str) -> str | None:
        """The 6-digit code in the last message accepted for `address`, if any."""
        last = self.last_to(address)
        return last.code if last else None

    async def wait_for(
        self, count: int = 1, *, to: str | None = None, timeout: float = 10
    ) -> list[ReceivedMail]:
        """Accepted messages (for `to`, if given) once at least `count` have arrived."""

        def matching() -> list[ReceivedMail]:
            return self.messages if to is None else self.sent_to(to)

        try:
            async with asyncio.timeout(timeout):
                while len(matching()) < count:
                    self._arrival.clear()
                    await self._arrival.wait()
        except TimeoutError:
            raise AssertionError(
                f"expected {count} email(s){f' to {to}' if to else ''} within {timeout}s, "
                f"got {len(matching())}; attempts: {self.attempts}"
            ) from None
        return list(matching())

    def _take(self, stage: Stage) -> _Failure | None:
        if self._failures and self._failures[0].stage == stage:
            return self._failures.pop(0)
        return None


class _Handler:
    """aiosmtpd hooks: answer from the failure queue, else accept and record."""

    def __init__(self, fake: FakeSmtp) -> None:
        self.fake = fake

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        failure = self.fake._take("rcpt")
        code = failure.code if failure else 250
        self.fake.attempts.append((time.monotonic(), "rcpt", address, code))
        if failure:
            return f"{failure.code} {failure.text}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fake = self.fake
        recipients = ",".join(envelope.rcpt_tos)
        failure = fake._take("data")
        if failure and failure.code is None:
            fake.attempts.append((time.monotonic(), "data", recipients, None))
            await fake._closing.wait()
            return "421 4.3.2 Shutting down"
        if failure:
            fake.attempts.append((time.monotonic(), "data", recipients, failure.code))
            return f"{failure.code} {failure.text}"
        content = envelope.original_content or b""
        message = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        auth = session.auth_data
        fake.messages.append(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_tos=tuple(envelope.rcpt_tos),
                message=message,
                auth_user=auth.login.decode() if isinstance(auth, LoginPassword) else None,
                received_at=time.monotonic(),
            )
        )
        fake.attempts.append((time.monotonic(), "data", recipients, 250))
        fake._arrival.set()
        return "250 2.0.0 Message accepted for delivery"


def _authenticator(fake: FakeSmtp) -> Callable[..., AuthResult]:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == fake.username
            and auth_data.password.decode() == fake.password
        )
        # handled=False: let aiosmtpd answer a refusal with 535 itself.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return authenticate


class _DropLoginDataNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


@asynccontextmanager
async def smtp_server(
    *, username: str | None = None, password: str | None = None
) -> AsyncIterator[FakeSmtp]:
    """A recording SMTP server on 127.0.0.1 (a free port) for the duration of the block."""
    fake = FakeSmtp(username=username, password=password)
    loop = asyncio.get_running_loop()
    handler = _Handler(fake)
    sessions: set[SMTP] = set()

    def protocol() -> SMTP:
        smtp = SMTP(
            handler,
            hostname="fake-smtp.test",
            loop=loop,
            authenticator=_authenticator(fake) if username is not None else None,
            # Loopback only: AUTH without TLS is what the test needs, not a risk.
            auth_require_tls=username is None,
        )
        sessions.add(smtp)
        return smtp

    server = await loop.create_server(protocol, fake.host, 0, backlog=1024)
    fake.port = server.sockets[0].getsockname()[1]
    # aiosmtpd itself sets its deprecated `login_data` on every login, and says so each time.
    quiet = _DropLoginDataNotice()
    logging.getLogger("mail.log").addFilter(quiet)
    try:
        yield fake
    finally:
        logging.getLogger("mail.log").removeFilter(quiet)
        fake._closing.set()
        server.close()
        for smtp in sessions:
            if smtp.transport is not None:
                smtp.transport.close()
        await server.wait_closed()
        # Let the sessions' handler tasks see their connections go.
        await asyncio.sleep(0)
