"""Webhook receivers for the dispatcher's tests: the integration guide's Express receiver, run as
published in a node subprocess (tests/clients/node/receiver.js), and a misbehaving aiohttp receiver
(errors, redirects, hangs, dropped connections, endless bodies).

Both record every request they get, in arrival order, and `wait_for` waits for arrivals rather than
sleeping. Neither blocks the event loop: the test's loop is also the one serving the API. Limits:
the Express receiver records a request only once its response is finished (a delivery whose client
hung up first is not recorded), and its `receivedAt` is wall-clock milliseconds (`Date.now()`),
while the Python receiver's is `time.monotonic()` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import pytest
from aiohttp import web

NODE_DIR = Path(__file__).parent.parent / "clients" / "node"
RECORD_PREFIX = "@@REC "
LISTENING_PREFIX = "@@LISTENING "
START_TIMEOUT = 15.0
# A delivery body is one JSON line on the node side's stdout; asyncio's default 64 KiB line limit
# would break the reader on the first large one.
LINE_LIMIT = 16 * 1024 * 1024

BEHAVIOURS = ("ok", "error", "redirect", "hang", "close", "huge")
REDIRECT_TARGET = "http://169.254.169.254/latest/meta-data/"
HUGE_LENGTH = 1 << 30
HUGE_CHUNK = b"\0" * (64 * 1024)

Predicate = Callable[[dict[str, Any]], bool]


class _Recorder:
    """Requests in arrival order, and a way to wait for them."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self._arrival = asyncio.Event()

    def _record(self, request: dict[str, Any]) -> None:
        self.requests.append(request)
        self._arrival.set()

    def _gone(self) -> str | None:
        """Why no more requests can arrive, or None while the receiver is up."""
        return None

    async def wait_for(
        self, count: int, timeout: float = 15, predicate: Predicate | None = None,
    ) -> list[dict[str, Any]]:
        """The requests matching `predicate` once at least `count` of them have arrived."""
        def matching() -> list[dict[str, Any]]:
            return [r for r in self.requests if predicate is None or predicate(r)]

        try:
            async with asyncio.timeout(timeout):
                while len(found := matching()) < count and self._gone() is None:
                    self._arrival.clear()
                    await self._arrival.wait()
        except TimeoutError:
            found = matching()
        if len(found) >= count:
            return found
        gone = self._gone()
        arrived = "\n".join(f"  {_summary(r)}" for r in self.requests) or "  (none)"
        raise AssertionError(
            f"expected {count} matching request(s) within {timeout} s, got {len(found)}"
            + (f" ({gone})" if gone else "")
            + f"; all {len(self.requests)} that arrived:\n{arrived}"
        )


def _summary(request: dict[str, Any]) -> str:
    headers = request.get("headers", {})
    body = request.get("rawBody")
    if isinstance(body, bytes):
        body = body[:200].decode("utf-8", "replace")
    elif isinstance(body, str):
        body = body[:200]
    shown = {k: request[k] for k in ("method", "path", "status", "behaviour") if k in request}
    return f"{shown} event={headers.get('x-webhook-event')!r} body={body!r}"


# --- The guide's Express receiver -------------------------------------------------------------------


class ExpressReceiver(_Recorder):
    """The guide's Express receiver in a node subprocess; see tests/clients/node/receiver.js."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        super().__init__()
        self.proc = proc
        self.base_url = ""
        self.url = ""
        self.log_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._port: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._eof = False
        self._stderr_reader = asyncio.create_task(self._read_stderr())
        self._stdout_reader = asyncio.create_task(self._read_stdout())

    async def configure(
        self, secret: str | None = None, fail_next: int = 0, fail_status: int = 500,
    ) -> None:
        """Set WEBHOOK_SECRET and make the next `fail_next` deliveries answer `fail_status`."""
        body: dict[str, Any] = {"failNext": fail_next, "failStatus": fail_status}
        if secret is not None:
            body["secret"] = secret
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.base_url}/__control", json=body) as r,
        ):
            assert r.status == 200, await r.text()

    def _gone(self) -> str | None:
        if not self._eof:
            return None
        return f"the receiver exited with {self.proc.returncode}: {self._stderr_tail()}"

    def _stderr_tail(self) -> str:
        return "\n".join(self.stderr_lines[-20:]) or "(no stderr)"

    async def _start(self) -> None:
        try:
            async with asyncio.timeout(START_TIMEOUT):
                port = await self._port
        except TimeoutError:
            port = None
        if port is None:
            pytest.fail(f"the Express receiver did not start: {self._stderr_tail()}")
        self.base_url = f"http://127.0.0.1:{port}"
        self.url = f"{self.base_url}/webhooks/2fa"

    async def _stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        await self.proc.wait()
        await asyncio.gather(self._stdout_reader, self._stderr_reader)

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        try:
            while line := (await self.proc.stdout.readline()).decode("utf-8", "replace"):
                line = line.rstrip("\n")
                if line.startswith(RECORD_PREFIX):
                    self._record(json.loads(line[len(RECORD_PREFIX):]))
                elif line.startswith(LISTENING_PREFIX) and not self._port.done():
                    self._port.set_result(int(line[len(LISTENING_PREFIX):]))
                else:
                    self.log_lines.append(line)
        finally:
            # Wait (briefly) for the exit status and the last of stderr, for the failure message.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self.proc.wait()
                    await self._stderr_reader
            self._eof = True
            if not self._port.done():
                self._port.set_result(None)
            self._arrival.set()

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.stderr_lines.append(line.decode("utf-8", "replace").rstrip("\n"))


@contextlib.asynccontextmanager
async def express_receiver() -> AsyncIterator[ExpressReceiver]:
    """Run the guide's Express receiver on a free port; killed and reaped on exit."""
    if not (NODE_DIR / "node_modules" / "express").is_dir():
        pytest.fail(f"express is not installed in {NODE_DIR}: run `make test` (it runs npm ci)")
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not on PATH: the Express receiver needs Node.js")
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / "receiver.js"), "0",
        stdin=asyncio.subprocess.PIPE,  # receiver.js exits when this closes: no orphans
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=LINE_LIMIT,
    )
    rx = ExpressReceiver(proc)
    try:
        await rx._start()
        yield rx
    finally:
        await rx._stop()


# --- The misbehaving Python receiver ----------------------------------------------------------------


class PythonReceiver(_Recorder):
    """An aiohttp receiver whose `behaviour` and `fail_next` can change while it runs."""

    def __init__(self, behaviour: str) -> None:
        super().__init__()
        self.behaviour = behaviour
        self.fail_next = 0
        self.url = ""
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def in_flight(self) -> int:
        """Handlers still running (a hanging or streaming answer the client has not let go of)."""
        return len(self._handlers)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            return await self._answer(request)
        finally:
            self._handlers.discard(task)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        behaviour = self.behaviour
        if self.fail_next > 0:
            self.fail_next -= 1
            behaviour = "fail"
        headers: dict[str, str] = {}
        for name, value in request.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self._record({
            "method": request.method,
            "path": request.path_qs,
            "headers": headers,
            "rawBody": body,
            "receivedAt": time.monotonic(),
            "behaviour": behaviour,
        })
        if behaviour == "ok":
            return web.json_response({"ok": True})
        if behaviour in ("error", "fail"):
            return web.json_response({"error": f"injected {behaviour}"}, status=500)
        if behaviour == "redirect":
            return web.Response(status=302, headers={"Location": REDIRECT_TARGET})
        if behaviour == "hang":
            await _forever()
        if behaviour == "close":
            # aiohttp then fails to write the response to the closed transport, which it treats
            # as a premature client disconnection: no error is logged.
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        if behaviour == "huge":
            return await _stream_huge(request)
        raise AssertionError(f"unknown behaviour {behaviour!r}; one of {BEHAVIOURS}")

    async def _cancel_handlers(self) -> None:
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)


async def _forever() -> NoReturn:
    """Wait until cancelled: by the client hanging up, or by the receiver closing."""
    await asyncio.get_running_loop().create_future()
    raise AssertionError("unreachable")


async def _stream_huge(request: web.Request) -> web.StreamResponse:
    """Claim 1 GiB and send it 64 KiB at a time, each write waiting for the client to drain the
    last, until it is all sent or the client hangs up: a client must cap what it reads."""
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = HUGE_LENGTH
    await response.prepare(request)
    try:
        for _ in range(HUGE_LENGTH // len(HUGE_CHUNK)):
            await response.write(HUGE_CHUNK)
        await response.write_eof()
    except ConnectionError:
        pass  # the client stopped reading and closed, as it should
    return response


@contextlib.asynccontextmanager
async def python_receiver(behaviour: str = "ok") -> AsyncIterator[PythonReceiver]:
    """Serve a PythonReceiver on a free 127.0.0.1 port in this event loop; any path is accepted."""
    assert behaviour in BEHAVIOURS, f"unknown behaviour {behaviour!r}; one of {BEHAVIOURS}"
    rx = PythonReceiver(behaviour)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rx.handle)
    # handler_cancellation: a client that gives up (a timeout) ends its hanging handler.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        rx.url = f"http://{host}:{port}/hook"
        yield rx
    finally:
        # Hanging and endless handlers would hold up the runner's graceful shutdown.
        await rx._cancel_handlers()
        await runner.cleanup()
