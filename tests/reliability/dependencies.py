"""Private PostgreSQL, Redis and RabbitMQ servers for the fault runs: each on free loopback ports,
with its files in a temporary directory, owned by the test session, restartable at will, and
removed afterwards. The machine's shared servers (5432, 6379, 5672) are never touched: other test
runs and CI use them at the same time.

Each server runs as a child process in a session of its own, so stopping it (or `kill -9`) takes
its helpers (RabbitMQ's Erlang children, PostgreSQL's backends) with it. PostgreSQL refuses to
run as root: as root, its files belong to, and it runs as, the `postgres` user.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aio_pika
import asyncpg
import redis.asyncio as aioredis

from tests.ports import free_port


def _pg_bin() -> Path:
    """The newest PostgreSQL server binaries Debian installed (or those on PATH)."""
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(x) for x in p.parent.parent.name.split(".") if x.isdigit()],
    )
    if installed:
        return installed[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
# Debian's /usr/sbin/rabbitmq-server re-runs itself as the rabbitmq user with the machine's
# settings; the script it wraps runs as the caller with ours.
RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


async def _until(check: Callable[[], Awaitable[object]], timeout: float, what: str) -> float:
    """Poll the async `check` until it succeeds; seconds it took, or RuntimeError naming `what`."""
    started = time.monotonic()
    last: BaseException | None = None
    while time.monotonic() - started < timeout:
        try:
            await check()
            return time.monotonic() - started
        except ServerExited:
            raise
        except Exception as exc:  # not up yet
            last = exc
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} not up within {timeout:.0f} s: {last!r}")


class ServerExited(RuntimeError):
    """The server process ended while it was being waited for."""


class Server:
    """One private server process: `start` (again after a `stop`), `stop` (graceful or kill)."""

    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, root: Path) -> None:
        self.dir = root / self.name
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        return None

    def user(self) -> str | None:
        return None

    async def ping(self) -> None:
        raise NotImplementedError

    async def start(self) -> float:
        """Start the server and wait until it answers; the seconds that took."""
        log = open(self.dir / f"server.{self.starts}.log", "wb")  # noqa: SIM115 - the child owns it
        self.starts += 1
        with log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.command(), cwd=self.dir, env=self.environment(), user=self.user(),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )
        return await _until(self._answering, START_TIMEOUT, self.name)

    async def _answering(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is not None:
            raise ServerExited(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
        await self.ping()

    async def stop(self, *, kill: bool = False) -> None:
        """Stop gracefully (its usual shutdown signal), or `kill -9` the whole process group."""
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if kill:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.send_signal(self.stop_signal)
        try:
            async with asyncio.timeout(STOP_TIMEOUT):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()

    def log_tail(self, lines: int = 15) -> str:
        log = self.dir / f"server.{self.starts - 1}.log"
        if not log.exists():
            return "(no log)"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


class Redis(Server):
    """`redis-server` without persistence: a restart comes back empty, as a cache may."""

    name = "redis"

    def command(self) -> list[str]:
        return [
            shutil.which("redis-server") or "redis-server", "--port", str(self.port),
            "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no",
        ]

    async def ping(self) -> None:
        client = aioredis.Redis(port=self.port, socket_connect_timeout=1)
        try:
            await client.ping()
        finally:
            await client.aclose()


class Postgres(Server):
    """PostgreSQL 15 in its own cluster (trust auth on loopback); SIGINT is its "fast" stop."""

    name = "postgres"
    stop_signal = signal.SIGINT

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.data = self.dir / "data"
        self._owner = "postgres" if os.geteuid() == 0 else None
        if self._owner:
            entry = pwd.getpwnam(self._owner)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    def user(self) -> str | None:
        return self._owner

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    async def init(self) -> None:
        """Create the cluster (once, before the first start)."""
        proc = await asyncio.create_subprocess_exec(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--no-sync", user=self._owner, cwd=self.dir,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"initdb failed: {out.decode(errors='replace')}")

    def command(self) -> list[str]:
        return [
            str(PG_BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
            # Durability across power loss is not what these runs test; restarts keep the data.
            "-c", "fsync=off", "-c", "max_connections=200",
        ]

    async def ping(self) -> None:
        conn = await asyncpg.connect(f"{self.url}/postgres", timeout=2)
        await conn.close()


class RabbitMQ(Server):
    """A RabbitMQ node of its own (no plugins), named `rel<random>@localhost`; SIGTERM stops it
    cleanly, keeping durable queues and persistent messages for the next start."""

    name = "rabbitmq"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.dist_port = free_port()
        self.node = f"rel{secrets.token_hex(3)}@localhost"
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")
        (self.dir / "enabled_plugins").write_text("[].\n")
        # The machine's rabbitmq-env.conf names the shared node: this one reads an empty file.
        (self.dir / "rabbitmq-env.conf").write_text("")

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def command(self) -> list[str]:
        server = RABBITMQ_SERVER if RABBITMQ_SERVER.exists() else shutil.which("rabbitmq-server")
        return [str(server)]

    def environment(self) -> dict[str, str]:
        d = self.dir
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(d),  # its Erlang cookie lives here
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(d / "plugins"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }

    async def ping(self) -> None:
        # The port opens last in the boot; probing it first keeps aiormq from logging an error
        # for every refused attempt while the node starts.
        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.close()
        await writer.wait_closed()
        connection = await aio_pika.connect(self.url, timeout=2)
        await connection.close()


class Dependencies:
    """The three private servers, started together and removed together."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # PostgreSQL runs as another user (as root): it must be able to reach its directory.
        root.chmod(root.stat().st_mode | 0o011)
        self.postgres = Postgres(root)
        self.redis = Redis(root)
        self.rabbitmq = RabbitMQ(root)

    @property
    def servers(self) -> dict[str, Server]:
        return {"postgresql": self.postgres, "redis": self.redis, "rabbitmq": self.rabbitmq}

    async def start(self) -> None:
        await self.postgres.init()
        await asyncio.gather(*(server.start() for server in self.servers.values()))

    async def stop(self) -> None:
        await asyncio.gather(*(server.stop() for server in self.servers.values()))
