"""HTTP throughput/latency benchmark of the API, driven by wrk. Prints its figures; asserts nothing.

`bash bench/run.sh` (or `make bench`) runs this with the venv's Python. It starts its own system
beside any developer's `make run`: database `tfa_bench`, Redis key prefix `tfa-bench:`, broker
prefix `bench.`, API on 127.0.0.1:3101 and the consumers' health ports on 3102-3104, fresh random
secrets, LOG_LEVEL=WARNING, BCRYPT_ROUNDS=12. It waits for every /health/ready, registers one
account, runs each scenario (a short warm-up, then a measured wrk run), prints a table, writes
bench/results/bench-<UTC time>.json (plus the services' logs next to it), then stops the services
and deletes the database, the Redis keys and the broker objects it created.

The 2FA verify scenarios first create an API key and enrol end users with TOTP through the API
(concurrently), then send wrong codes (every answer should be 401) or right codes, each pair sent
once (every answer should be 200). `--only` runs some of the scenarios.

bench/suite.py adds, in the same run and against the same system: the bcrypt rate of the cores,
the verify scenarios against the bare aiohttp ceiling (bench/ceiling.py) and privacyIDEA
(bench/peers/privacyidea.py) with the same users and secrets, the login with 2FA
(bench/login2fa.py) and the login storm (bench/storm.py). Around every measured run the CPU of
each process group and the peak RSS of each service are recorded. bench/all.py (`make bench`)
runs this with shorter settings, beside the other parts.

The process environment may point at other PostgreSQL/Redis/RabbitMQ servers (DATABASE_URL's
server part, REDIS_*, RABBITMQ_URL); every other service setting is fixed here, and the services
run in an empty working directory so no `.env` is read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import aio_pika
import aiohttp
import asyncpg
import pyotp
from peers import process_tree
from procstats import PeakRss

from shared import broker, db
from shared.broker import Topology
from shared.cache import create_cache
from shared.config import Settings
from shared.logs import configure_logging
from shared.migrate import prepare

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LUA = BENCH / "lua"
RESULTS = BENCH / "results"

DATABASE = "tfa_bench"
REDIS_KEY_PREFIX = "tfa-bench:"
BROKER_PREFIX = "bench."
HOST = "127.0.0.1"
API_PORT = 3101
# module -> (health-port variable, port)
SERVICES: dict[str, tuple[str, int] | None] = {
    "api": None,
    "notifier": ("NOTIFIER_HEALTH_PORT", 3102),
    "webhook_dispatcher": ("WEBHOOK_DISPATCHER_HEALTH_PORT", 3103),
    "audit": ("AUDIT_HEALTH_PORT", 3104),
}
# Where the dependencies are may come from the environment; nothing else does.
INHERITED = ("REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD", "RABBITMQ_URL")
SECRETS = ("JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET", "DEVICE_TOKEN_SECRET", "ENCRYPTION_KEY")
# Only the benchmark's API: wrong codes must reach the code check instead of the lockout.
TWOFA_MAX_FAILURES = 1_000_000_000
API_KEY_RATE_LIMIT = 1_000_000  # per hour, the most the API accepts
STORM_RECEIVER_PORT = 3105  # webhooks_bench.RECEIVER_PORT: the storm's webhook receiver
CLK_TCK = os.sysconf("SC_CLK_TCK")
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore http_proxy


@dataclass(frozen=True)
class Scenario:
    name: str
    method: str
    path: str
    connections: int
    script: str
    duration: int  # seconds measured (after the warm-up)
    tags: frozenset[str] = frozenset()  # what --only selects it by (its name is one too)
    expect: int | None = None  # the one right status; None: any status >= 400 is an error
    variant: str = ""  # shown after the path in the tables
    # What serves it: "api", or a peer of bench/suite.py ("ceiling", "privacyidea"), on `port`.
    target: str = "api"
    port: int = API_PORT
    # "wrk": a wrk run (measure); "login-2fa", "storm": bench/suite.py's own load generators.
    kind: str = "wrk"

    @property
    def label(self) -> str:
        peer = "" if self.target == "api" else f"{self.target}: "
        return f"{peer}{self.method} {self.path}" + (f" {self.variant}" if self.variant else "")


def scenarios(
    duration: int,
    login_duration: int,
    *,
    login_conns: tuple[int, ...] = (16, 64),
    verify_conns: tuple[int, ...] = (16, 64),
    storm_duration: int = 20,
    storm_conns: int = 64,
) -> list[Scenario]:
    def plain(
        name: str, method: str, path: str, conns: int, script: str, tag: str, secs: int
    ) -> Scenario:
        return Scenario(name, method, path, conns, script, secs, frozenset({tag}))

    def verify(name: str, conns: int, expect: int, variant: str, target: str = "api") -> Scenario:
        if target == "api":
            path, script, port, tag = "/api/2fa/verify", "verify.lua", API_PORT, "verify"
        else:
            path, script, port, tag = suite_peer(target)
        tags = frozenset({tag})
        return Scenario(
            name, "POST", path, conns, script, duration, tags, expect, variant, target, port
        )

    def pair(target: str, prefix: str) -> list[Scenario]:
        return [
            verify(f"{prefix}-{kind}", conns, expect, f"({kind} code)", target)
            for kind, expect in (("wrong", 401), ("right", 200))
            for conns in verify_conns
        ]

    login_2fa = Scenario(
        "login-2fa", "POST", "/api/auth/login", 16, "", login_duration, frozenset({"login"}),
        variant="+ /api/2fa/verify (2FA on)", kind="login-2fa",
    )  # fmt: skip
    storm = Scenario(
        "storm", "MIX", "login storm", storm_conns, "", storm_duration, frozenset({"storm"}),
        variant="(80% verify, 15% login, 5% setup)", kind="storm",
    )  # fmt: skip
    return [
        plain("health/live", "GET", "/api/health/live", 64, "health.lua", "health", duration),
        plain("auth/me", "GET", "/api/auth/me", 64, "me.lua", "me", duration),
        *(
            plain("auth/login", "POST", "/api/auth/login", c, "login.lua", "login", login_duration)
            for c in login_conns
        ),
        login_2fa,
        *pair("api", "verify"),
        *pair("ceiling", "ceiling"),
        *pair("privacyidea", "privacyidea"),
        storm,
    ]


def suite_peer(target: str) -> tuple[str, str, int, str]:
    """(path, wrk script, port, --only tag) of a peer's verify scenarios (bench/suite.py)."""
    import suite

    return suite.PEERS[target]


def selectors(all_scenarios: list[Scenario]) -> list[str]:
    found: list[str] = []
    for s in all_scenarios:
        for name in sorted(s.tags) + [s.name]:
            if name not in found:
                found.append(name)
    return found


def select(all_scenarios: list[Scenario], only: str | None) -> list[Scenario]:
    """The scenarios named by `--only` (comma-separated tags or names), in the usual order."""
    if not only:
        return all_scenarios
    wanted = {w.strip() for w in only.split(",") if w.strip()}
    unknown = wanted - set(selectors(all_scenarios))
    if unknown:
        raise SystemExit(
            f"--only: unknown {', '.join(sorted(unknown))}; "
            f"choose from {', '.join(selectors(all_scenarios))}"
        )
    return [s for s in all_scenarios if wanted & (s.tags | {s.name})]


# --------------------------------------------------------------------------- settings and system


def service_env() -> dict[str, str]:
    """The services' environment: this process's, minus every service setting it carries, plus
    the benchmark's own settings (database, prefixes, ports, fresh secrets)."""
    env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields or k in INHERITED}
    base_url = os.environ.get("DATABASE_URL", Settings.model_fields["DATABASE_URL"].default)
    env.update(
        DATABASE_URL=db.server_url(base_url, DATABASE),
        REDIS_KEY_PREFIX=REDIS_KEY_PREFIX,
        BROKER_PREFIX=BROKER_PREFIX,
        HOST=HOST,
        PORT=str(API_PORT),
        LOG_LEVEL="WARNING",
        BCRYPT_ROUNDS="12",
        TWOFA_MAX_FAILURES=str(TWOFA_MAX_FAILURES),
        WEBHOOK_ALLOW_PRIVATE_URLS="true",  # the storm's webhook goes to 127.0.0.1
        PYTHONUNBUFFERED="1",
    )
    for port in SERVICES.values():
        if port:
            env[port[0]] = str(port[1])
    for name in SECRETS:
        env[name] = secrets.token_hex(32)  # 64 characters
    return env


def settings_of(env: dict[str, str]) -> Settings:
    fields = {k: v for k, v in env.items() if k in Settings.model_fields}
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


async def cleanup_resources(settings: Settings) -> None:
    """Drop the benchmark's database, Redis keys and broker objects (also stale ones)."""
    steps = []

    async def drop_db() -> None:
        await db.drop_database(settings.DATABASE_URL)

    async def redis_keys() -> None:
        async with create_cache(settings) as cache:
            keys = [
                k async for k in cache.client.scan_iter(match=f"{REDIS_KEY_PREFIX}*", count=1000)
            ]
            for i in range(0, len(keys), 1000):
                await cache.client.delete(*keys[i : i + 1000])

    async def broker_objects() -> None:
        topology = Topology(BROKER_PREFIX)
        connection = await aio_pika.connect(settings.RABBITMQ_URL, timeout=5)
        async with connection:
            channel = await connection.channel()
            # The dispatcher's delays and the other consumers' (audit, notifier).
            delays = {*settings.WEBHOOK_RETRY_DELAYS, settings.WEBHOOK_DEFER_SECONDS, *settings.CONSUMER_RETRY_DELAYS}
            for name in topology.all_queues(sorted(delays)):
                await channel.queue_delete(name)
            await channel.exchange_delete(topology.exchange)

    for step in (drop_db, redis_keys, broker_objects):
        try:
            await step()
        except Exception as exc:  # noqa: BLE001 - keep cleaning the rest
            steps.append(f"{step.__name__}: {exc!r}")
    if steps:
        print("cleanup problems: " + "; ".join(steps), file=sys.stderr)


class System:
    """The API and the three consumers (or the `services` given), each in its own session,
    logging to files."""

    def __init__(
        self,
        env: dict[str, str],
        log_dir: Path,
        services: dict[str, tuple[str, int] | None] | None = None,
    ) -> None:
        self.env = env
        self.log_dir = log_dir
        self.services = SERVICES if services is None else services
        self.workdir = Path(tempfile.mkdtemp(prefix="tfa-bench-"))  # no .env here
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for module in self.services:
            with open(self.log_dir / f"{module}.log", "wb") as log:
                self.procs[module] = subprocess.Popen(
                    [sys.executable, "-m", module],
                    cwd=self.workdir,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )

    def check_alive(self) -> None:
        for module, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.log_dir / f"{module}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{module} exited with {proc.returncode}:\n{tail}")

    def wait_ready(self, timeout: float = 60) -> None:
        urls = [f"http://{HOST}:{API_PORT}/api/health/ready"] + [
            f"http://{HOST}:{port[1]}/health/ready" for port in self.services.values() if port
        ]
        deadline = time.monotonic() + timeout
        pending = list(urls)
        while pending:
            self.check_alive()
            pending = [u for u in pending if http("GET", u, timeout=2)[0] != 200]
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"not ready after {timeout:.0f} s: {', '.join(pending)}")
            if pending:
                time.sleep(0.3)

    def pids(self) -> dict[str, int]:
        return {m: p.pid for m, p in self.procs.items()}

    def trees(self) -> dict[str, list[int]]:
        """Each service's processes (the API's forked workers with API_WORKERS > 1)."""
        return {m: process_tree(p.pid) for m, p in self.procs.items() if p.poll() is None}

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with NO_PROXY.open(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


# --------------------------------------------------------------------------- CPU accounting


def all_processes() -> dict[int, tuple[str, float]]:
    """pid -> (command name, CPU seconds used so far) for every process on the machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it exited meanwhile
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 1 :].split()
        if fields[1] == "2" or entry.name == "2":
            comm = "[kernel]"  # kernel threads: their time counts in "other", not as a process
        utime, stime = int(fields[11]), int(fields[12])
        found[int(entry.name)] = (comm, (utime + stime) / CLK_TCK)
    return found


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return total - idle, total


class CpuMeter:
    """CPU used per group of processes over an interval, in cores (1.0 = one core busy)."""

    GROUPS_BY_COMM: ClassVar[dict[str, str]] = {
        "postgres": "postgres",
        "redis-server": "redis",
        "beam.smp": "rabbitmq",
    }

    def __init__(self, service_pids: Mapping[str, int | Iterable[int]]) -> None:
        """`service_pids`: each service's pid or pids (a forking service: the whole tree);
        "api" is its own group, the others are "consumers"."""
        self.service_groups: dict[int, str] = {}
        for module, pids in service_pids.items():
            self.add("api" if module == "api" else "consumers", pids)

    def add(self, group: str, pids: int | Iterable[int]) -> None:
        """Count `pids` as `group` from now on ("peer": bench/suite.py's comparison servers)."""
        for pid in [pids] if isinstance(pids, int) else pids:
            self.service_groups[pid] = group

    def group_of(self, pid: int, comm: str) -> str | None:
        return self.service_groups.get(pid) or self.GROUPS_BY_COMM.get(comm)

    def snapshot(self) -> dict[str, Any]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {
            "t": time.monotonic(),
            "procs": all_processes(),
            "children": children.ru_utime + children.ru_stime,  # only wrk is ever waited for
            "machine": machine_jiffies(),
        }

    def usage(self, start: dict[str, Any], end: dict[str, Any], top: int = 0) -> dict[str, Any]:
        """Cores per group; 'other' is the machine's busy time not in a group (kernel work,
        other processes); with `top`, also the busiest processes outside the groups."""
        elapsed = end["t"] - start["t"]
        groups = ("api", "consumers", "peer", "postgres", "redis", "rabbitmq", "bench")
        cores = dict.fromkeys(groups, 0.0)
        others: list[tuple[float, str]] = []
        for pid, (comm, seconds) in end["procs"].items():
            before = start["procs"].get(pid)
            used = seconds - (before[1] if before and before[0] == comm else 0.0)
            group = "bench" if pid == os.getpid() else self.group_of(pid, comm)
            if group:
                cores[group] += max(0.0, used) / elapsed
            elif comm != "[kernel]" and used > 0:
                others.append((used / elapsed, f"{comm}[{pid}]"))
        cores["wrk"] = (end["children"] - start["children"]) / elapsed
        named = sum(cores.values())
        busy = end["machine"][0] - start["machine"][0]
        total = end["machine"][1] - start["machine"][1]
        cores["machine"] = (os.cpu_count() or 1) * busy / total if total else 0.0
        cores["other"] = max(0.0, cores["machine"] - named)
        result: dict[str, Any] = {k: round(v, 2) for k, v in cores.items()}
        result["seconds"] = round(elapsed, 2)
        if top:
            result["busiest_other_processes"] = [
                {"process": name, "cores": round(c, 2)}
                for c, name in sorted(others, reverse=True)[:top]
                if c >= 0.01
            ]
        return result


# The consumers' queues, and the outbox rows the relay has not taken yet: what the system still
# owes after a run (the storm and the verify scenarios report them).
EVENT_QUEUES = {
    "dispatcher": f"{BROKER_PREFIX}{broker.WEBHOOK_DISPATCHER}",
    "dispatcher_jobs": f"{BROKER_PREFIX}{broker.WEBHOOK_DISPATCHER}.jobs",
    "audit": f"{BROKER_PREFIX}{broker.AUDIT}",
    "notifier": f"{BROKER_PREFIX}{broker.NOTIFIER}",
}
UNSENT_SQL = "SELECT count(*) FROM outbox WHERE sent_at IS NULL"


async def queue_depths(settings: Settings, names: list[str]) -> dict[str, int]:
    """Messages ready in each queue (0 for a queue not declared)."""
    connection = await aio_pika.connect(settings.RABBITMQ_URL, timeout=5)
    async with connection:
        channel = await connection.channel()
        depths = {}
        for name in names:
            try:
                queue = await channel.declare_queue(name, passive=True)
            except aio_pika.exceptions.ChannelClosed:
                channel = await connection.channel()
                depths[name] = 0  # not declared yet
                continue
            depths[name] = queue.declaration_result.message_count or 0
        return depths


async def event_backlog(settings: Settings) -> dict[str, int]:
    """Events not yet relayed (outbox) and waiting in each consumer's queue."""
    conn = await asyncpg.connect(settings.DATABASE_URL)
    try:
        found = {"outbox": await conn.fetchval(UNSENT_SQL)}
    finally:
        await conn.close()
    depths = await queue_depths(settings, list(EVENT_QUEUES.values()))
    return found | {name: depths[queue] for name, queue in EVENT_QUEUES.items()}


def backlog_of(system: System, scenario: Scenario) -> dict[str, int] | None:
    """`event_backlog` now, for a scenario of the API (None for a peer's)."""
    if scenario.target != "api":
        return None
    return asyncio.run(event_backlog(settings_of(system.env)))


def quiesce(meter: CpuMeter, limit: float = 120) -> float:
    """Wait until the API and consumers are idle again (abandoned logins still hash after wrk
    disconnects; events are still being consumed). Returns the seconds waited."""
    started = time.monotonic()
    quiet = 0
    while quiet < 2 and time.monotonic() - started < limit:
        before = meter.snapshot()
        time.sleep(0.5)
        use = meter.usage(before, meter.snapshot())
        quiet = quiet + 1 if use["api"] + use["consumers"] < 0.1 else 0
    return round(time.monotonic() - started, 1)


# --------------------------------------------------------------------------- 2FA verify data

STEP_SECONDS = 30  # TOTP time step (RFC 6238 default, as the API uses)
WINDOW_STEPS = 1  # the API accepts the codes of the current step +-1
SKEW_SEARCH_STEPS = 10  # and looks up to 10 steps away to report clock skew
RUN_MARGIN_SECONDS = 5  # wrk start-up, reading the pairs, requests still in flight at the end
MAX_RIGHT_SECONDS = 25  # a right-code run fits in the +-1 step window whenever it starts
ESTIMATE_MARGIN = 1.25  # measured run sized for 1.25 x the warm-up's rate


def step_at(t: float) -> int:
    return int(t // STEP_SECONDS)


def wrong_code(secret: str, now: int) -> str:
    """A code that none of the steps the API could compare it with during the next minutes (the
    window and the skew search around step `now`) produces."""
    totp = pyotp.TOTP(secret)
    spread = SKEW_SEARCH_STEPS + 5
    taken = {totp.generate_otp(s) for s in range(now - spread, now + spread + 1)}
    code = f"{random.randrange(10**6):06d}"
    while code in taken:
        code = f"{random.randrange(10**6):06d}"
    return code


@dataclass
class Pool:
    """End users with TOTP enabled, and the latest time step any of them may have used."""

    name: str
    secrets: dict[str, str]  # userId -> base32 secret
    last_step: int = 0


class Verify:
    """What the /2fa/verify scenarios need: an API key and two pools of end users with TOTP on,
    enrolled through the API, and the files of (userId, code) pairs that verify.lua reads.

    - `small` (1,000 users by default): the wrong codes (scenario verify-wrong), any number per
      user (TWOFA_MAX_FAILURES is raised for this API); also the right codes of the right-code
      runs' warm-ups.
    - `large` (10,000 by default): the right codes of the measured right-code runs, one per user
      and run. A code is accepted once per user and step, and only for a step after the last one
      the user used, so each run uses a step its users have not used yet and that stays within
      the API's +-1 step window for the whole run (`right_pairs`).
    """

    def __init__(self, base: str, small: int, large: int, concurrency: int) -> None:
        self.base = base
        self.concurrency = concurrency
        self.sizes = {"small": small, "large": large}
        self.pools: dict[str, Pool] = {}
        self.api_key = ""
        self.dir = Path(tempfile.mkdtemp(prefix="tfa-bench-pairs-"))
        self.files = 0
        self.enrolment: dict[str, Any] = {}

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # ----- set-up

    def create_key(self, token: str) -> None:
        status, body = http(
            "POST",
            f"{self.base}/api/api-keys",
            {"name": "bench", "scopes": ["2fa:read", "2fa:write"], "rateLimit": API_KEY_RATE_LIMIT},
            headers={"Authorization": f"Bearer {token}"},
        )
        if status != 201 or not isinstance(body, dict) or "apiKey" not in body.get("data", {}):
            raise RuntimeError(f"API key creation failed: {status} {body}")
        self.api_key = str(body["data"]["apiKey"])

    def enrol(self) -> dict[str, Any]:
        """Set up and confirm TOTP for every user of both pools, `concurrency` users at a time.
        Each is confirmed with the code of the step *before* the current one, so its current
        step stays unused."""
        ids = [(pool, f"bench-{pool}-{i:05d}") for pool, n in self.sizes.items() for i in range(n)]
        started = time.monotonic()
        secrets_by_pool, last_step, retries = asyncio.run(self._enrol(ids))
        seconds = time.monotonic() - started
        for name in self.sizes:
            self.pools[name] = Pool(name, secrets_by_pool[name], last_step[name])
        self.enrolment = {
            "users": len(ids),
            "pools": dict(self.sizes),
            "concurrency": self.concurrency,
            "seconds": round(seconds, 1),
            "users_per_second": round(len(ids) / seconds, 1),
            "requests": 2 * len(ids) + retries,
            "confirm_retries": retries,
        }
        return self.enrolment

    async def _enrol(
        self, ids: list[tuple[str, str]]
    ) -> tuple[dict[str, dict[str, str]], dict[str, int], int]:
        found: dict[str, dict[str, str]] = {name: {} for name in self.sizes}
        last_step = dict.fromkeys(self.sizes, 0)
        retries = 0
        todo = iter(ids)
        headers = {"X-API-Key": self.api_key}
        timeout = aiohttp.ClientTimeout(total=120)
        connector = aiohttp.TCPConnector(limit=self.concurrency)

        async def call(session: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, Any]:
            async with session.post(f"{self.base}{path}", json=body, headers=headers) as r:
                return r.status, await r.json(content_type=None)

        async def one(session: aiohttp.ClientSession, pool: str, user_id: str) -> None:
            nonlocal retries
            status, body = await call(session, "/api/2fa/totp/setup", {"userId": user_id})
            if status != 200:
                raise RuntimeError(f"TOTP setup of {user_id}: {status} {body}")
            secret = body["data"]["secret"]
            totp = pyotp.TOTP(secret)
            for attempt in range(3):
                step = step_at(time.time()) - 1
                code = totp.generate_otp(step)
                status, body = await call(
                    session, "/api/2fa/totp/verify-setup", {"userId": user_id, "code": code}
                )
                if status == 200:
                    break
                # 400 INVALID_CODE: the step moved on between the code and the check; again.
                if status != 400 or attempt == 2:
                    raise RuntimeError(f"TOTP verify-setup of {user_id}: {status} {body}")
                retries += 1
            found[pool][user_id] = secret
            last_step[pool] = max(last_step[pool], step)

        async def worker(session: aiohttp.ClientSession) -> None:
            for pool, user_id in todo:
                await one(session, pool, user_id)

        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await asyncio.gather(*(worker(session) for _ in range(self.concurrency)))
        return found, last_step, retries

    # ----- pairs for wrk

    def _write(self, lines: list[str]) -> Path:
        self.files += 1
        path = self.dir / f"pairs-{self.files}.txt"
        path.write_text("\n".join(lines) + "\n")
        return path

    def wrong_pairs(self, pool_name: str = "small") -> tuple[Path, dict[str, Any]]:
        """One wrong code per user of the pool (the small one): a code that none of the steps
        the API could compare it with during the next minutes (the window and the skew search)
        produces."""
        pool = self.pools[pool_name]
        now = step_at(time.time())
        lines = [f"{user_id} {wrong_code(secret, now)}" for user_id, secret in pool.secrets.items()]
        random.shuffle(lines)
        return self._write(lines), {"pool": pool_name, "pairs": len(lines), "mode": "cycle"}

    def right_pairs(self, pool_name: str, seconds: int) -> tuple[Path, dict[str, Any]]:
        """One right code per user of the pool, all for one step T: the current step, or a
        later one if the pool's users already used it (a code is accepted only for a step after
        the user's last), such that the API accepts the codes during the whole run
        (T-1 <= the API's step <= T+1 from now until `seconds` + a margin from now; runs are at
        most MAX_RIGHT_SECONDS long, so there is always one). Waits for the next step if none
        fits yet (only when a third run on one pool would start within one step)."""
        pool = self.pools[pool_name]
        while True:
            now = time.time()
            ends = step_at(now + seconds + RUN_MARGIN_SECONDS)
            target = max(pool.last_step + 1, step_at(now), ends - WINDOW_STEPS)
            if target <= step_at(now) + WINDOW_STEPS:
                break
            wait = (target - WINDOW_STEPS) * STEP_SECONDS - now + 0.05
            print(f"    waiting {wait:.0f} s for the next TOTP step", flush=True)
            time.sleep(wait)
        lines = [
            f"{user_id} {pyotp.TOTP(secret).generate_otp(target)}"
            for user_id, secret in pool.secrets.items()
        ]
        random.shuffle(lines)
        pool.last_step = target  # whether or not every pair gets used
        info = {
            "pool": pool_name,
            "pairs": len(lines),
            "mode": "once",
            "step": target,
            "step_offset_at_start": target - step_at(now),
            "seconds_left_in_window": round((target + WINDOW_STEPS + 1) * STEP_SECONDS - now, 1),
        }
        return self._write(lines), info

    def env(self, path: Path, mode: str, expect: int) -> dict[str, str]:
        return {
            "BENCH_API_KEY": self.api_key,
            "BENCH_PAIRS": str(path),
            "BENCH_PAIRS_MODE": mode,
            "BENCH_EXPECT": str(expect),
        }


# --------------------------------------------------------------------------- wrk


def wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], check=False, capture_output=True, text=True)
    return (out.stdout + out.stderr).splitlines()[0].strip()


def run_wrk(
    scenario: Scenario, seconds: int, threads: int, timeout: int, env: dict[str, str]
) -> tuple[dict[str, Any], str]:
    threads = min(threads, scenario.connections)
    env = {**env, "BENCH_THREADS": str(threads)}  # verify.lua splits the pairs between threads
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{scenario.connections}",
        f"-d{seconds}s",
        f"--timeout={timeout}s",
        "--latency",
        "-s",
        str(LUA / scenario.script),
        f"http://{HOST}:{scenario.port}{scenario.path}",
    ]
    out = subprocess.run(
        cmd, check=False, capture_output=True, text=True, env=env, timeout=seconds + timeout + 60
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(
            f"wrk failed ({out.returncode}): {' '.join(cmd)}\n{out.stdout}\n{out.stderr}"
        )
    human = "\n".join(
        line for line in out.stdout.splitlines() if not line.startswith("BENCH_RESULT ")
    )
    return json.loads(lines[-1][len("BENCH_RESULT ") :]), human


def summarise(raw: dict[str, Any]) -> dict[str, Any]:
    """The figures of one wrk run. `unexpected` counts the responses with a wrong status: any
    status >= 400 (wrk's "non-2xx"), or, for a script that counts statuses (verify.lua), any
    status but the one expected. A run whose pairs ran out (threads stopped early) is rated over
    the time its requests were actually sent in, not over wrk's whole duration."""
    seconds = raw["duration_us"] / 1e6
    errors = raw["errors"]
    socket_errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    lat = raw["latency_us"]
    extra = raw.get("extra") or {}
    statuses = {int(k): v for k, v in extra.get("statuses", {}).items()}
    if "expect" in extra:
        unexpected = sum(n for status, n in statuses.items() if status != extra["expect"])
    else:
        unexpected = errors["status"]
    rated_seconds = seconds
    if extra.get("exhausted_threads") and extra.get("last_response_us", 0) > extra.get(
        "first_request_us", 0
    ):
        rated_seconds = (extra["last_response_us"] - extra["first_request_us"]) / 1e6
    summary = {
        "requests": raw["requests"],
        "seconds": round(seconds, 2),
        "requests_per_second": round(raw["requests"] / rated_seconds, 1) if rated_seconds else 0.0,
        "latency_ms": {k: round(v / 1000, 2) for k, v in lat.items()},
        "non_2xx": errors["status"],
        "unexpected": unexpected,
        "socket_errors": socket_errors,
        "errors_total": unexpected + socket_errors,
        "wrk_errors": errors,
    }
    if extra:
        summary["statuses"] = {str(k): v for k, v in sorted(statuses.items())}
        summary["expected_status"] = extra.get("expect")
        summary["pairs"] = extra.get("pairs")
        summary["pairs_taken"] = extra.get("sent")
        summary["exhausted_threads"] = extra.get("exhausted_threads", 0)
        if summary["exhausted_threads"]:
            summary["rated_seconds"] = round(rated_seconds, 2)
        if extra.get("unexpected_sample"):
            summary["unexpected_sample"] = extra["unexpected_sample"]
    return summary


# --------------------------------------------------------------------------- main


def setup_account(base: str) -> dict[str, str]:
    username = f"bench_{secrets.token_hex(4)}"
    password = secrets.token_hex(16)
    status, body = http(
        "POST",
        f"{base}/api/auth/register",
        {"email": f"{username}@example.com", "username": username, "password": password},
    )
    if status != 201:
        raise RuntimeError(f"register failed: {status} {body}")
    return {"username": username, "password": password}


def access_token(base: str, account: dict[str, str]) -> str:
    status, body = http(
        "POST",
        f"{base}/api/auth/login",
        {"emailOrUsername": account["username"], "password": account["password"]},
    )
    if status != 200 or not isinstance(body, dict) or "accessToken" not in body.get("data", {}):
        raise RuntimeError(f"login failed: {status} {body}")
    return str(body["data"]["accessToken"])


def git_state() -> dict[str, Any]:
    """The commit measured and whether the working tree differed from it (read-only git calls)."""

    def git(*argv: str) -> str:
        out = subprocess.run(["git", *argv], cwd=ROOT, check=False, capture_output=True, text=True)
        return out.stdout if out.returncode == 0 else ""

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {
        "commit": git("rev-parse", "HEAD").strip() or None,
        "uncommitted_changes_outside_bench": [f for f in changed if not f.startswith("bench/")],
    }


def machine(*, wrk: bool = False) -> dict[str, Any]:
    """The machine a benchmark ran on, for its JSON."""
    found: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    if wrk:
        found["wrk"] = wrk_version() if shutil.which("wrk") else None
    return found


def warn_disturbed(cpu: dict[str, Any], figures: str = "this scenario's figures are") -> None:
    """Say so when more than 0.2 cores went to processes outside the measured ones."""
    if cpu["other"] > 0.2:
        print(
            f"    warning: {cpu['other']} cores went elsewhere ({elsewhere(cpu)}); {figures} disturbed",
            flush=True,
        )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def table_rows(results: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(label, result, summary) per line: a storm adds a line per request kind and one for the
    health sampler beside it."""
    rows = []
    for r in results:
        rows.append((r["label"], r, r["result"]))
        for kind, summary in r.get("by_kind", {}).items():
            rows.append((f"  storm: {kind}", {}, summary))
        if "health" in r:
            rows.append((f"  storm: GET /api/health/live at {r['health_rate']}/s", {}, r["health"]))
    return rows


def print_table(results: list[dict[str, Any]]) -> None:
    rows = table_rows(results)
    width = max([len("scenario")] + [len(label) for label, _, _ in rows])
    print()
    head = (
        f"{'scenario':<{width}} {'conns':>5} {'requests':>9} {'requests/s':>11} {'p50 ms':>9} "
        f"{'p99 ms':>9} {'errors/bad status':>18} {'CPU s/1k':>9}"
    )
    print(head)
    print("-" * len(head))
    for label, r, s in rows:
        rate = f"{s['requests_per_second']:.1f}" + ("*" if s.get("exhausted_threads") else "")
        per_1000 = r.get("cpu_seconds_per_1000")
        print(
            f"{label:<{width}} {r.get('connections', ''):>5} {s['requests']:>9} {rate:>11} "
            f"{s['latency_ms']['p50']:>9.2f} {s['latency_ms']['p99']:>9.2f} "
            f"{s['socket_errors']:>9}/{s['unexpected']:<8} "
            f"{per_1000 if per_1000 is not None else '':>9}"
        )
    print(
        "(errors = socket errors (connect/read/write/timeout); bad status = status >= 400, or "
        "for 2fa/verify any status but the expected one: 401 for wrong codes, 200 for right "
        "codes; CPU s/1k = CPU seconds of the serving processes per 1,000 requests: API, "
        "consumers, PostgreSQL, Redis and RabbitMQ, or a peer, PostgreSQL and Redis)"
    )
    if any(r["result"].get("exhausted_threads") for r in results):
        print(
            "(* the run's pairs ran out before its end: the rate is over the time they lasted, "
            "and its CPU figures below are averaged over the whole run, so they are too low)"
        )
    print()
    head = (
        f"{'CPU, cores used':<{width}} {'conns':>5} {'api':>6} {'consumers':>10} {'peer':>6} "
        f"{'postgres':>9} {'redis':>6} {'rabbitmq':>9} {'wrk':>6} {'bench':>6} {'other':>6} "
        f"{'machine':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        c = r["cpu_cores"]
        print(
            f"{r['label']:<{width}} {r['connections']:>5} {c['api']:>6.2f} "
            f"{c['consumers']:>10.2f} {c.get('peer', 0):>6.2f} {c['postgres']:>9.2f} "
            f"{c['redis']:>6.2f} {c['rabbitmq']:>9.2f} {c['wrk']:>6.2f} {c.get('bench', 0):>6.2f} "
            f"{c['other']:>6.2f} {c['machine']:>8.2f}"
        )
    print(
        f"(cores: 1.00 = one core busy for the whole run; this machine has {os.cpu_count()}. "
        "'peer' = the ceiling or privacyIDEA; 'bench' = this script (the 2FA login's and the "
        "storm's load generator); 'other' = machine minus the named groups: kernel, other "
        "processes.)"
    )
    print()
    print("peak RSS during the measured run, MB (sum over each service's processes):")
    for r in results:
        peaks = ", ".join(f"{k} {v:.0f}" for k, v in r.get("peak_rss_mb", {}).items())
        print(f"  {r['label']} c={r['connections']}: {peaks}")
    print()


def elsewhere(cpu: dict[str, Any]) -> str:
    busiest = ", ".join(f"{p['process']} {p['cores']}" for p in cpu["busiest_other_processes"])
    return busiest or "short-lived processes or the kernel"


def start_profile(
    args: argparse.Namespace, system: System, scenario: Scenario, seconds: int
) -> tuple[subprocess.Popen[bytes], Path] | None:
    """With --profile: py-spy samples the API process during the measured run, into a file of
    collapsed stacks (one line per stack and its sample count; flamegraph.pl or speedscope
    read it). Idle time (waiting in epoll) is not sampled."""
    if not args.profile:
        return None
    name = f"{scenario.name.replace('/', '-')}-c{scenario.connections}"
    out = args.profile_dir / f"api-{name}.txt"
    pid = str(system.pids()["api"])
    cmd = [args.py_spy, "record", "--pid", pid, "--duration", str(seconds), "--rate", "200"]
    cmd += ["--format", "raw", "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, out


def finish_profile(profiler: tuple[subprocess.Popen[bytes], Path] | None) -> str | None:
    if profiler is None:
        return None
    proc, out = profiler
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    if not out.exists():
        print(f"    py-spy wrote no profile: {err.decode(errors='replace')[-500:]}", flush=True)
        return None
    print(f"    profile of the API: {out.relative_to(ROOT)}", flush=True)
    return str(out.relative_to(ROOT))


def verify_phase(
    scenario: Scenario, verify: Verify, phase: str, seconds: int, warm: dict[str, Any] | None
) -> tuple[dict[str, str], int, dict[str, Any]]:
    """The pairs file (written now, just before the run) and the duration of one run of a verify
    scenario. Wrong codes: the small pool, round and round. Right codes: the warm-up uses the
    small pool, the measured run the large one; each pair once. The measured run is shortened
    if the warm-up's rate says it would run out of pairs (verify.lua also stops a thread whose
    pairs are used up, and the rate is then taken over the time actually used)."""
    assert scenario.expect is not None
    prefix = "" if scenario.target == "api" else f"{scenario.target}-"  # a peer's own pools
    if scenario.expect != 200:
        path, info = verify.wrong_pairs(prefix + "small")
        return verify.env(path, "cycle", scenario.expect), seconds, info
    pool = prefix + ("small" if phase == "warm-up" else "large")
    replays = scenario.target == "ceiling"  # it has no replay guard: its pairs go round
    planned = seconds
    seconds = min(seconds, MAX_RIGHT_SECONDS)
    if phase == "measured" and warm is not None and not replays:
        rate = warm["requests_per_second"]
        if rate > 0:
            fits = int(len(verify.pools[pool].secrets) / (rate * ESTIMATE_MARGIN))
            seconds = max(1, min(seconds, fits))
    path, info = verify.right_pairs(pool, seconds)
    info["planned_seconds"], info["seconds"] = planned, seconds
    mode = "cycle" if replays else "once"
    info["mode"] = mode
    return verify.env(path, mode, scenario.expect), seconds, info


def measure(
    scenario: Scenario,
    meter: CpuMeter,
    system: System,
    args: argparse.Namespace,
    wrk_env: dict[str, str],
    verify: Verify | None = None,
    services: dict[str, list[int]] | None = None,
) -> dict[str, Any]:
    """Warm up, wait for the system to idle, run wrk for the scenario's duration, print a line.
    `services`: the processes whose peak RSS is reported (default: the system's)."""
    label = f"{scenario.label} c={scenario.connections}"
    warm: dict[str, Any] | None = None
    pairs: dict[str, Any] = {}
    if args.warmup:
        env, seconds = wrk_env, args.warmup
        if verify:
            env_add, seconds, pairs["warm-up"] = verify_phase(
                scenario, verify, "warm-up", seconds, None
            )
            env = {**wrk_env, **env_add}
        print(f"  {label}: warm-up {seconds} s ...", flush=True)
        warm = summarise(run_wrk(scenario, seconds, args.threads, args.timeout, env)[0])
        if verify:
            print(
                f"    warm-up: {warm['requests']} requests, {warm['requests_per_second']:.0f} "
                f"req/s, statuses {warm.get('statuses')}",
                flush=True,
            )
    waited = quiesce(meter)
    system.check_alive()
    env, seconds = wrk_env, scenario.duration
    if verify:
        env_add, seconds, pairs["measured"] = verify_phase(
            scenario, verify, "measured", seconds, warm
        )
        env = {**wrk_env, **env_add}
    print(f"  {label}: measuring {seconds} s ...", flush=True)
    profiler = start_profile(args, system, scenario, seconds)
    rss = PeakRss(system.trees() if services is None else services).start()
    owed_before = backlog_of(system, scenario)
    before = meter.snapshot()
    raw, human = run_wrk(scenario, seconds, args.threads, args.timeout, env)
    cpu = meter.usage(before, meter.snapshot(), top=5)
    # What the run left for later (the CPU above does not include working it off): a backlog
    # that grows with the run's length means the rate is not one the system can keep up.
    owed = backlog_of(system, scenario)
    peak = rss.stop()
    profile = finish_profile(profiler)
    system.check_alive()
    summary = summarise(raw)
    latency = summary["latency_ms"]
    print(
        f"    {summary['requests_per_second']:.1f} req/s, p50 {latency['p50']} ms, "
        f"p99 {latency['p99']} ms, {summary['requests']} requests, errors "
        f"{summary['socket_errors']} socket / {summary['unexpected']} bad status"
        + (f" (statuses {summary['statuses']})" if "statuses" in summary else "")
        + f"; CPU {cpu_line(cpu, scenario.target)}",
        flush=True,
    )
    if owed is not None and owed_before is not None and any((*owed.values(), *owed_before.values())):
        print(
            "    events owed (not yet relayed / waiting in queues) at the start -> at the end: "
            + ", ".join(f"{name} {owed_before[name]} -> {count}" for name, count in owed.items()),
            flush=True,
        )
    if summary.get("exhausted_threads"):
        print(
            f"    note: the pairs ran out in {summary['exhausted_threads']} thread(s); the rate "
            f"is over the {summary['rated_seconds']} s they lasted",
            flush=True,
        )
    if summary.get("unexpected_sample"):
        print(f"    first unexpected answer: {summary['unexpected_sample']}", flush=True)
    warn_disturbed(cpu)
    quiesce(meter)  # drain in-flight work (abandoned logins, events) before the next scenario
    result = {
        "scenario": scenario.name,
        "label": scenario.label,
        "method": scenario.method,
        "path": scenario.path,
        "connections": scenario.connections,
        "threads": min(args.threads, scenario.connections),
        "warmup_seconds": args.warmup,
        "duration_seconds": seconds,
        "quiesce_seconds_before": waited,
        "target": scenario.target,
        "result": summary,
        "cpu_cores": cpu,
        "cpu_seconds_per_1000": cpu_per_1000(cpu, summary["requests"], scenario.target),
        "peak_rss_mb": peak["mb"],
        "peak_rss_reset": peak["reset"],
        "wrk": raw,
        "wrk_output": human,
    }
    if owed is not None:
        result["events_owed_at_start"] = owed_before
        result["events_owed_at_end"] = owed
    if profile:
        result["profile"] = profile
    if scenario.expect is not None:
        result["expected_status"] = scenario.expect
    if pairs:
        result["pairs"] = pairs
    if warm is not None and verify:
        result["warmup_result"] = {
            k: warm[k] for k in ("requests", "requests_per_second", "statuses", "unexpected")
        }
    return result


# The processes that serve a target's requests, whose CPU a request costs.
SYSTEM_GROUPS = {
    "api": ("api", "consumers", "postgres", "redis", "rabbitmq"),
    "peer": ("peer", "postgres", "redis"),
}


def cpu_per_1000(cpu: dict[str, Any], requests: int, target: str = "api") -> float | None:
    """CPU seconds the serving processes used per 1,000 requests: for the API the API, the
    consumers, PostgreSQL, Redis and RabbitMQ; for a peer the peer, PostgreSQL and Redis."""
    if not requests:
        return None
    groups = SYSTEM_GROUPS["api" if target == "api" else "peer"]
    seconds = sum(cpu.get(g, 0.0) for g in groups) * cpu["seconds"]
    return round(1000 * seconds / requests, 2)


def cpu_line(cpu: dict[str, Any], target: str = "api") -> str:
    first = "api" if target == "api" else "peer"
    shown = [first, "postgres", "wrk", "bench", "machine"]
    return " ".join(f"{g} {cpu[g]}" for g in shown if cpu.get(g) or g in (first, "machine"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=int, default=12, help="measured seconds per scenario (default 12)"
    )
    parser.add_argument(
        "--login-duration",
        type=int,
        default=15,
        help="measured seconds per login scenario (default 15)",
    )
    parser.add_argument(
        "--warmup", type=int, default=3, help="warm-up seconds before each scenario (default 3)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="wrk threads (default 2, one per core)"
    )
    parser.add_argument(
        "--timeout", type=int, default=30, help="wrk per-request timeout in seconds (default 30)"
    )
    parser.add_argument(
        "--login-connections",
        type=conns,
        default=(16, 64),
        help="connections of the login scenario, comma-separated (default 16,64)",
    )
    parser.add_argument(
        "--verify-connections",
        type=conns,
        default=(16, 64),
        help="connections of the verify scenarios (API and peers; default 16,64)",
    )
    parser.add_argument(
        "--storm-duration",
        type=int,
        default=20,
        help=f"measured seconds of the login storm (default 20, at most {MAX_RIGHT_SECONDS})",
    )
    parser.add_argument(
        "--storm-connections", type=int, default=64, help="login storm: workers (default 64)"
    )
    parser.add_argument(
        "--health-rate",
        type=float,
        default=20,
        help="login storm: GET /api/health/live per second beside it (default 20)",
    )
    parser.add_argument(
        "--bcrypt-seconds",
        type=float,
        default=4,
        help="seconds of the bcrypt rate measurement (default 4)",
    )
    parser.add_argument(
        "--api-workers",
        type=int,
        default=1,
        help="API_WORKERS of the API, and processes of the ceiling (default 1)",
    )
    parser.add_argument(
        "--db-pool-max",
        type=int,
        default=64,
        help="DB_POOL_MAX of the services and the ceiling (default 64: as many as the verify "
        "scenarios' connections, so no request waits for a database connection)",
    )
    parser.add_argument(
        "--pi-wrong-users",
        type=int,
        default=300,
        help="privacyIDEA: users of the small pool it gets (wrong codes; default 300)",
    )
    parser.add_argument(
        "--pi-right-users",
        type=int,
        default=800,
        help="privacyIDEA: users of the large pool it gets (right codes; default 800)",
    )
    parser.add_argument(
        "--pi-workers",
        type=int,
        default=0,
        help="privacyIDEA: gunicorn sync workers (default: its image's, 2 x cores + 1, at most 4)",
    )
    parser.add_argument(
        "--out", type=Path, help="write the JSON here (default bench/results/bench-<time>.json)"
    )
    every = scenarios(12, 15)
    parser.add_argument(
        "--only",
        metavar="NAMES",
        help="run only these scenarios, comma-separated: " + ", ".join(selectors(every)),
    )
    parser.add_argument(
        "--wrong-users",
        type=int,
        default=1000,
        help="end users sent wrong codes (and the right-code warm-ups' users; default 1000)",
    )
    parser.add_argument(
        "--right-users",
        type=int,
        default=10000,
        help="end users sent right codes, one per user and run (default 10000)",
    )
    parser.add_argument(
        "--enrol-concurrency",
        type=int,
        default=64,
        help="end users enrolled at a time (default 64)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the API with py-spy during each measured run (its figures are then "
        "disturbed; see bench/README.md)",
    )
    args = parser.parse_args()
    chosen = select(
        scenarios(
            args.duration,
            args.login_duration,
            login_conns=args.login_connections,
            verify_conns=args.verify_connections,
            storm_duration=args.storm_duration,
            storm_conns=args.storm_connections,
        ),
        args.only,
    )
    args.py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if args.profile and not os.access(args.py_spy, os.X_OK):
        print("--profile needs py-spy: .venv/bin/pip install py-spy", file=sys.stderr)
        return 1

    if shutil.which("wrk") is None:
        print(
            "wrk is not installed (bench/run.sh installs it: apt-get install -y wrk)",
            file=sys.stderr,
        )
        return 1
    ports = [API_PORT] + [s[1] for s in SERVICES.values() if s]
    ports += sorted({s.port for s in chosen if s.port != API_PORT})
    ports += [STORM_RECEIVER_PORT] if any(s.kind == "storm" for s in chosen) else []
    busy = [p for p in ports if port_in_use(p)]
    if busy:
        print(
            f"port(s) {', '.join(map(str, busy))} on {HOST} already in use; "
            "is another benchmark running?",
            file=sys.stderr,
        )
        return 1

    source = git_state()
    dirty = source["uncommitted_changes_outside_bench"]
    print(
        f"measuring commit {(source['commit'] or 'unknown')[:12]}"
        + (f" plus {len(dirty)} uncommitted change(s) outside bench/" if dirty else ""),
        flush=True,
    )
    env = service_env()
    env["API_WORKERS"] = str(args.api_workers)
    env["DB_POOL_MAX"] = str(args.db_pool_max)
    settings = settings_of(env)
    configure_logging(settings, "bench")  # WARNING: no per-migration lines
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_dir = RESULTS / f"logs-{stamp}"
    args.profile_dir = RESULTS / f"profile-{stamp}"
    if args.profile:
        args.profile_dir.mkdir(parents=True)
    base = f"http://{HOST}:{API_PORT}"
    system = System(env, log_dir)

    def on_term(signum: int, _: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    results: list[dict[str, Any]] = []
    idle: dict[str, Any] = {}
    verify: Verify | None = None
    import suite  # after run_bench is importable by name (see the end of this file)

    extras = suite.Suite(args, base, settings, log_dir)
    try:
        asyncio.run(cleanup_resources(settings))  # leftovers of an interrupted run
        applied = asyncio.run(prepare(settings))
        print(
            f"database {DATABASE}: {len(applied)} migration(s) applied; starting api on "
            f":{API_PORT}, consumers' health on :3102-3104 (logs in {log_dir.relative_to(ROOT)})",
            flush=True,
        )
        system.start()
        system.wait_ready()
        meter = CpuMeter(system.trees())
        idle_before = meter.snapshot()
        time.sleep(2)
        idle = meter.usage(idle_before, meter.snapshot(), top=5)
        print(f"machine CPU while the system idles: {idle['machine']} cores", flush=True)
        if idle["machine"] > 0.2:
            print(
                f"  warning: the CPU is busy elsewhere ({elsewhere(idle)}); figures will be "
                "lower and noisier",
                flush=True,
            )
        account = setup_account(base)
        wrk_env = {
            **os.environ,
            "BENCH_LUA_DIR": str(LUA),
            "BENCH_USERNAME": account["username"],
            "BENCH_PASSWORD": account["password"],
        }
        print(
            f"ready; account {account['username']} registered (bcrypt cost "
            f"{settings.BCRYPT_ROUNDS}); wrk -t{args.threads}, warm-up {args.warmup} s, then the "
            "measured run",
            flush=True,
        )

        if any("login" in s.tags or s.kind == "storm" for s in chosen):
            extras.bcrypt_rate()
        for i, scenario in enumerate(chosen):
            if scenario.script == "me.lua":
                wrk_env["BENCH_ACCESS_TOKEN"] = access_token(base, account)
            if (scenario.expect is not None or scenario.kind == "storm") and verify is None:
                verify = Verify(base, args.wrong_users, args.right_users, args.enrol_concurrency)
                verify.create_key(access_token(base, account))
                print(
                    f"enrolling {args.wrong_users} + {args.right_users} end users with TOTP "
                    f"(setup + verify-setup, {args.enrol_concurrency} at a time) ...",
                    flush=True,
                )
                try:
                    enrolment = verify.enrol()
                except (TimeoutError, aiohttp.ClientError) as exc:
                    time.sleep(2)
                    system.check_alive()  # a service that died says so, with its log's tail
                    raise RuntimeError(f"enrolment failed: {exc!r}") from exc
                enrolment["quiesce_seconds_after"] = quiesce(meter)
                print(
                    f"  enrolled {enrolment['users']} in {enrolment['seconds']} s "
                    f"({enrolment['users_per_second']} users/s, {enrolment['requests']} "
                    f"requests); system idle again after {enrolment['quiesce_seconds_after']} s",
                    flush=True,
                )
            if scenario.kind == "login-2fa":
                results.append(extras.login_2fa(scenario, meter, system))
                continue
            if scenario.kind == "storm":
                assert verify is not None
                results.append(extras.storm(scenario, meter, system, verify, account))
                continue
            env_, services = wrk_env, None
            if scenario.target != "api":
                assert verify is not None
                env_ = {**wrk_env, **extras.start_peer(scenario.target, verify, meter)}
                services = extras.services(scenario.target)
            results.append(
                measure(
                    scenario,
                    meter,
                    system,
                    args,
                    env_,
                    verify if scenario.expect is not None else None,
                    services,
                )
            )
            if scenario.target != "api" and all(
                s.target != scenario.target for s in chosen[i + 1 :]
            ):
                extras.stop_peer(scenario.target)
    except KeyboardInterrupt:
        print("interrupted; stopping", file=sys.stderr)
        return 130
    finally:
        extras.close()
        system.stop()
        asyncio.run(cleanup_resources(settings))
        if verify is not None:
            verify.close()

    print_table(results)
    report = {
        "started_utc": stamp,
        "command": " ".join(["bash bench/run.sh", *sys.argv[1:]]),
        "source": source,
        "machine": machine(wrk=True),
        "settings": {
            "database": DATABASE,
            "redis_key_prefix": REDIS_KEY_PREFIX,
            "broker_prefix": BROKER_PREFIX,
            "api_port": API_PORT,
            "bcrypt_rounds": settings.BCRYPT_ROUNDS,
            "api_workers": settings.API_WORKERS,
            "db_pool_max": settings.DB_POOL_MAX,
            "log_level": settings.LOG_LEVEL,
            "wrk_threads": args.threads,
            "wrk_timeout_seconds": args.timeout,
            "twofa_max_failures": settings.TWOFA_MAX_FAILURES,
            "profiled_with_py_spy": args.profile,
        },
        "notes": "cpu_cores: average cores used during the measured run (1.0 = one core); "
        "latency_ms from wrk's HdrHistogram of completed requests",
        "idle_cpu_cores": idle,
        "scenarios": results,
    }
    if verify is not None:
        report["verify_enrolment"] = verify.enrolment
    if extras.bcrypt is not None:
        report["bcrypt"] = extras.bcrypt
    if extras.setups:
        report["peers"] = extras.setups
    out = args.out or RESULTS / f"bench-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {out}")
    return 0


def conns(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


if __name__ == "__main__":
    # bench/suite.py and the modules it uses `import run_bench`: let them have this module,
    # not a second copy of it.
    sys.modules.setdefault("run_bench", sys.modules[__name__])
    sys.exit(main())
