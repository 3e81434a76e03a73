"""SMS through Twilio's Messages API, with the `twilio` library's own async client.

`TWILIO_API_BASE_URL` replaces `https://api.twilio.com` in every request (tests point it at a
local fake). Each send is bounded by `NOTIFIER_SEND_TIMEOUT_SECONDS`. Twilio's answers become
`ProviderError`s: 429, 408/409 and 5xx, timeouts and connection errors are passing; any other
4xx (21211 invalid 'To' number, 21614 not a mobile number, 20003 bad credentials) is permanent.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from shared.config import Settings

from notifier.masks import scrub
from notifier.providers import ProviderError

TWILIO_API = "https://api.twilio.com"
# 4xx answers that say "not now" rather than "never".
PASSING_CLIENT_STATUSES = frozenset({408, 409, 425, 429})


class _RebasedHttpClient(AsyncTwilioHttpClient):
    """Twilio's async HTTP client, sending what is meant for api.twilio.com to `base_url`."""

    def __init__(self, base_url: str, timeout: float) -> None:
        # The library logs every request's URL and headers at INFO; one line per message
        # from the notifier is enough.
        quiet = logging.getLogger("notifier.twilio_http")
        quiet.setLevel(logging.WARNING)
        super().__init__(timeout=timeout, logger=quiet)
        self.base_url = base_url.rstrip("/")

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API) :]
        headers = dict(headers or {})
        if auth is not None:
            # The library would build an aiohttp.BasicAuth, which aiohttp now deprecates.
            headers["Authorization"] = aiohttp.encode_basic_auth(*auth)
        return await super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            # The library passes no timeout of its own, and aiohttp's default is none at all.
            timeout=timeout or self.timeout,
            allow_redirects=allow_redirects,
        )


class TwilioSender:
    """Sends one SMS and returns Twilio's message sid, or raises `ProviderError`."""

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.NOTIFIER_SEND_TIMEOUT_SECONDS
        self.from_number = settings.TWILIO_PHONE_NUMBER
        self._http = _RebasedHttpClient(settings.TWILIO_API_BASE_URL, self.timeout)
        self._client = Client(
            settings.TWILIO_ACCOUNT_SID,
            settings.TWILIO_AUTH_TOKEN,
            http_client=self._http,
            # Settings are the only configuration; an empty mapping would make the library
            # fall back to os.environ (TWILIO_EDGE/TWILIO_REGION would reroute requests).
            environment={"TWILIO_EDGE": "", "TWILIO_REGION": ""},
        )

    async def close(self) -> None:
        await self._http.close()

    async def send(self, to: str, body: str) -> str:
        try:
            async with asyncio.timeout(self.timeout):
                message = await self._client.messages.create_async(
                    to=to, from_=self.from_number, body=body
                )
        except TimeoutError:
            raise ProviderError(
                f"Twilio did not answer in {self.timeout:g}s", permanent=False
            ) from None
        except (TwilioRestException, TwilioServiceException) as exc:
            raise classify(exc) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderError(f"Twilio unreachable: {scrub(str(exc))}", permanent=False) from None
        except TwilioException as exc:
            raise ProviderError(f"Twilio: {scrub(str(exc))}", permanent=False) from None
        return str(message.sid)


def classify(exc: TwilioRestException | TwilioServiceException) -> ProviderError:
    """One rule for every Twilio error answer: passing or permanent, with a loggable detail."""
    status = int(exc.status)
    if isinstance(exc, TwilioServiceException):
        text = exc.detail or exc.title
    else:
        text = str(exc.msg).removeprefix("Unable to create record: ")
    permanent = 400 <= status < 500 and status not in PASSING_CLIENT_STATUSES
    detail = f"Twilio HTTP {status}, error {exc.code}: {scrub(text)}"
    return ProviderError(detail, permanent=permanent, status=status)
