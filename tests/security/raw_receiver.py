"""A webhook receiver that records each request exactly as it came over the wire (request line
and header lines, byte for byte), so a test can see whether anything was smuggled into them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class RawRequest:
    request_line: bytes
    header_lines: list[bytes]

    @property
    def header_names(self) -> set[str]:
        return {line.split(b":", 1)[0].strip().lower().decode("latin-1") for line in self.header_lines}

    def header(self, name: str) -> str:
        for line in self.header_lines:
            key, _, value = line.partition(b":")
            if key.strip().lower() == name.encode():
                return value.strip().decode("latin-1")
        raise KeyError(name)


@dataclass
class RawReceiver:
    url: str = ""
    requests: list[RawRequest] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_for(self, count: int, timeout: float = 15) -> list[RawRequest]:
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.requests

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head[:-4].split(b"\r\n")
                request = RawRequest(lines[0], lines[1:])
                if "content-length" in request.header_names:
                    await reader.readexactly(int(request.header("content-length")))
                self.requests.append(request)
                self.arrived.set()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def raw_receiver() -> AsyncIterator[RawReceiver]:
    """Serve a RawReceiver on a free 127.0.0.1 port in this event loop."""
    rx = RawReceiver()
    server = await asyncio.start_server(rx._serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rx.url = f"http://127.0.0.1:{port}"
    try:
        yield rx
    finally:
        server.close()
        await server.wait_closed()
