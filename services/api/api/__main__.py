"""`python -m api`: serve the API on $PORT until SIGINT/SIGTERM.

With `API_WORKERS` > 1 the listening socket is opened once and that many worker processes are
forked to accept on it, so one API container uses several cores. Each worker is a full replica
(its own pools and outbox relay), which the design already allows.
"""

import os
import signal
import socket
import sys
from collections.abc import Callable

import uvloop
from aiohttp import web

from shared.config import Settings, load_settings
from shared.logs import configure_logging

from api.app import create_app


def serve(settings: Settings, sock: socket.socket | None = None) -> None:
    kwargs = {"sock": sock} if sock else {"host": settings.HOST, "port": settings.PORT}
    web.run_app(
        create_app(settings),
        access_log=None,
        print=None,
        shutdown_timeout=10,
        loop=uvloop.new_event_loop(),  # libuv's loop: less CPU per request than asyncio's own
        **kwargs,  # type: ignore[arg-type]
    )


def serve_workers(host: str, port: int, workers: int, serve_on: Callable[[socket.socket], None]) -> int:
    """Open the listening socket once, fork `workers` processes that each run `serve_on(sock)`,
    and wait for them (also the worker model of bench/ceiling.py, so the two compare fairly)."""
    sock = socket.create_server((host, port), backlog=1024, reuse_port=False)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:  # worker: run the app on the shared socket, never return to the loop below
            # Own process group: a terminal's Ctrl-C reaches only the parent, which stops each
            # worker once (a second signal during aiohttp's shutdown can leave it hanging).
            os.setpgid(0, 0)
            try:
                serve_on(sock)
            finally:
                os._exit(0)
        children.append(pid)
    sock.close()

    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    status = 0
    for _ in children:
        _, code = os.wait()
        if code and not status:
            status = 1
            stop(signal.SIGTERM, None)  # one worker died: take the rest down, let the supervisor restart
    return status


def main() -> None:
    settings = load_settings()
    configure_logging(settings, "api")
    if settings.API_WORKERS > 1:
        workers = settings.API_WORKERS
        sys.exit(serve_workers(settings.HOST, settings.PORT, workers, lambda sock: serve(settings, sock)))
    serve(settings)


if __name__ == "__main__":
    main()
