"""A DNS server at the network edge, faked: chosen names get the answers a test sets (and can
change mid-test, as a rebinding attacker's server does); every other name is resolved for real.

It stands in for the event loop's `getaddrinfo`, which is what both the API's registration check
(`url_guard.resolve`) and the dispatcher's HTTP client (`GuardedResolver`, through aiohttp's
`ThreadedResolver`) call, so the code under test is the code that runs in production.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


class FakeDns:
    def __init__(self, real: Any) -> None:
        self._real = real
        self._answers: dict[str, list[str]] = {}
        self.asked: list[str] = []

    def answer(self, name: str, addresses: list[str]) -> None:
        """From now on `name` resolves to `addresses`, in that order."""
        self._answers[name] = addresses

    async def getaddrinfo(self, host: Any, port: Any, *, family: int = 0, type: int = 0,
                          proto: int = 0, flags: int = 0) -> list[tuple[Any, ...]]:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in self._answers:
            return await self._real(host, port, family=family, type=type, proto=proto, flags=flags)
        self.asked.append(name)
        port = int(port or 0)
        infos = []
        for address in self._answers[name]:
            v6 = ":" in address
            if family not in (0, socket.AF_INET6 if v6 else socket.AF_INET):
                continue
            sockaddr = (address, port, 0, 0) if v6 else (address, port)
            infos.append((socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM, 6, "", sockaddr))
        if not infos:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return infos


@contextmanager
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDns]:
    """Install a `FakeDns` on the running loop for the block."""
    loop = asyncio.get_running_loop()
    dns = FakeDns(loop.getaddrinfo)
    with monkeypatch.context() as patch:
        patch.setattr(loop, "getaddrinfo", dns.getaddrinfo)
        yield dns
