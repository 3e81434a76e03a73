"""SSRF guard for webhook URLs: which URLs may be registered, and which addresses may be dialled.

A URL must be http(s), carry a plain host (no %-escapes) and no credentials, and be at most
`MAX_URL_LENGTH` long. Unless private targets are allowed (development, tests), every address
the host resolves to must be public: loopback, private, link-local (cloud metadata lives there),
shared, reserved, multicast and unspecified addresses are refused, IPv4-mapped IPv6 included.
The check runs at registration and again at each delivery, through `GuardedResolver`, which is
what the HTTP client connects with, so a DNS answer that changes after registration is caught too.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECONDS = 5.0


class UrlRefused(Exception):
    """The URL may not be used; `code` is the API's machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse(raw: str) -> URL:
    """The URL if its form is acceptable (scheme, host, no credentials), else `UrlRefused`."""
    if len(raw) > MAX_URL_LENGTH:
        raise UrlRefused("INVALID_WEBHOOK_URL", f"must be at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in raw):
        # The URL parser would quietly drop a CR/LF; refusing it keeps header injection out.
        raise UrlRefused("INVALID_WEBHOOK_URL", "must not contain spaces or control characters")
    try:
        url = URL(raw)
        host = url.host
    except (ValueError, TypeError, UnicodeError):
        raise UrlRefused("INVALID_WEBHOOK_URL", "is not a valid URL") from None
    if url.scheme not in ("http", "https"):
        raise UrlRefused("INVALID_WEBHOOK_URL", "must be an http:// or https:// URL")
    if not host:
        raise UrlRefused("INVALID_WEBHOOK_URL", "must name a host")
    if "%" in host:
        # A %-escape in a host (an encoded CR/LF, dot or IPv6 zone) is decoded by some clients and
        # resolvers and not by others: refuse the ambiguity rather than guess what gets dialled.
        raise UrlRefused("INVALID_WEBHOOK_URL", "must name a plain host, without %-escapes")
    if url.user is not None or url.password is not None:
        raise UrlRefused("INVALID_WEBHOOK_URL", "must not carry credentials")
    if url.fragment:
        raise UrlRefused("INVALID_WEBHOOK_URL", "must not have a #fragment")
    if len(str(url)) > MAX_URL_LENGTH:  # percent-encoding can lengthen it
        raise UrlRefused(
            "INVALID_WEBHOOK_URL", f"must be at most {MAX_URL_LENGTH} characters once encoded"
        )
    return url


def is_public(address: str) -> bool:
    """Whether an IP address is a public unicast address that a webhook may be sent to."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return is_public(str(mapped))
        if ip.teredo is not None:
            return False
    return ip.is_global and not ip.is_multicast


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        raise UrlRefused("WEBHOOK_URL_UNRESOLVABLE", f"host {host!r} does not resolve") from None
    return sorted({str(info[4][0]) for info in infos})


def refuse_private(host: str, addresses: list[str]) -> None:
    blocked = [a for a in addresses if not is_public(a)]
    if blocked or not addresses:
        raise UrlRefused(
            "WEBHOOK_URL_FORBIDDEN",
            f"host {host!r} resolves to a private, loopback, link-local or reserved address",
        )


async def check(raw: str, *, allow_private: bool) -> URL:
    """The URL when it may be registered; `UrlRefused` otherwise."""
    url = parse(raw)
    if not allow_private:
        assert url.host is not None
        refuse_private(url.host, await resolve(url.host, url.explicit_port or url.port or 80))
    return url


def refuse_private_literal(url: URL) -> None:
    """At delivery: aiohttp dials an IP-literal host without asking the resolver, so it is
    checked here; names are checked by `GuardedResolver`."""
    assert url.host is not None
    try:
        ipaddress.ip_address(url.host.split("%", 1)[0])
    except ValueError:
        return
    refuse_private(url.host, [url.host])


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver, refusing (as a connection error) hosts that resolve to private
    addresses. The client connects to exactly the addresses checked here."""

    def __init__(self, *, allow_private: bool) -> None:
        self._inner = ThreadedResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not self._allow_private:
            try:
                refuse_private(host, [r["host"] for r in results])
            except UrlRefused as exc:
                raise OSError(errno.EACCES, exc.message) from None
        return results

    async def close(self) -> None:
        await self._inner.close()

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"GuardedResolver(allow_private={self._allow_private})"

