"""Audit benchmark: events per second written by one audit replica, and the latency of
`GET /api/audit-logs` over a table of a million entries. Prints its figures; asserts nothing.

`make bench-audit` (or `.venv/bin/python bench/audit_bench.py`) starts its own system beside any
other: database `tfa_bench_audit`, Redis key prefix `tfa-bench-audit:`, broker prefix
`bench-audit.`, the API on 127.0.0.1:3121 and the audit replica's health port on 3122, fresh
secrets, LOG_LEVEL=WARNING. The services run in an empty working directory (no `.env`), and every
service setting inherited from the shell is replaced; only where PostgreSQL, Redis and RabbitMQ
are comes from the environment. The database, the Redis keys and the broker objects are removed
at the end (and leftovers of an interrupted run at the start).

1. Ingest, once per `--batch-sizes` value, each on a freshly created database: with no audit
   consumer running, N `2fa.failed` events (spread over `--owners` owners and `--users` userIds)
   are published straight to the events exchange with publisher confirms, routing key = type.
   Then one replica (`python -m audit`, AUDIT_BATCH_SIZE set, the other settings default)
   starts, and the clock runs from the moment its health port accepts a connection (it
   consumes right after) until the entries are committed. Progress is polled from
   `audit_chain_heads` (the sum of the owners' last `chain_seq`, moved in the same transaction
   as each batch's COPY, so it equals `count(*) FROM audit_log` at every commit, without
   scanning the table every poll); `count(*)` and `count(DISTINCT event_id)` are read once at
   the end, and `python -m audit.verify` checks every owner's chain.
2. Queries, on another fresh database: one account registers through the API; a million
   entries are written with the audit service's own `audit.store.write_batch` in batches of
   5,000 (recording times spread over `--days` days, each day in its own partition made by
   `audit.store.ensure_partitions`, as a replica running that long would have), a hot owner
   (the account) holding `--hot-share` of them; `VACUUM (ANALYZE)`; `python -m audit.verify`.
   Then wrk runs each query at each `--connections` (a warm-up, then the measured run) with the
   account's access token, and each query's SQL is run once under EXPLAIN ANALYZE.

With `--profile`, py-spy samples the replica during the ingest runs and the API during the
measured query runs (those figures are then a little low) and the top functions are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aio_pika
import aiohttp
import asyncpg
import run_bench as rb
from api.domain import audit as audit_read
from audit import store
from procstats import PeakRss

from shared import broker, db
from shared.cache import create_cache
from shared.config import Settings
from shared.events import Actor, Event, EventType, TwoFactorData, TwoFactorFailedData
from shared.logs import configure_logging
from shared.migrate import prepare

DATABASE = "tfa_bench_audit"
REDIS_KEY_PREFIX = "tfa-bench-audit:"
BROKER_PREFIX = "bench-audit."
HOST = rb.HOST
API_PORT = 3121
AUDIT_HEALTH_PORT = 3122
INHERITED = ("REDIS_HOST", "REDIS_PORT", "REDIS_DB", "REDIS_PASSWORD", "RABBITMQ_URL")
SECRETS = ("JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET", "DEVICE_TOKEN_SECRET", "ENCRYPTION_KEY")
TOPOLOGY = broker.Topology(BROKER_PREFIX)
AUDIT_QUEUE = TOPOLOGY.queue(broker.AUDIT)
TARGET_EVENTS_PER_SECOND = 10_000  # per replica (the target)
TARGET_P99_MS = 20
STALL_SECONDS = 60  # no entry committed for this long: the ingest run is reported as stalled
FILL_BATCH = 5000
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) bench/1"
# The fill's event types and their shares of each owner's entries, with valid data for each.
TYPE_MIX: list[tuple[EventType, int]] = [
    (EventType.TWOFA_VERIFIED, 60),
    (EventType.TWOFA_FAILED, 30),
    (EventType.TWOFA_ENABLED, 8),
    (EventType.TWOFA_DISABLED, 2),
]
# With one wrk script for every query: it sends the paths of a file in turn.
PATHS_LUA = """-- Written by bench/audit_bench.py: GET the paths of BENCH_PATHS in turn.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
local headers = {Authorization = "Bearer " .. os.getenv("BENCH_ACCESS_TOKEN")}
local threads = 0
function setup(thread)
  thread:set("first", threads)
  threads = threads + 1
end
local i = 0
function init(args)
  i = ((first or 0) * 7919) % #paths
end
function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], headers)
end
"""


# --------------------------------------------------------------------------- system


def service_env() -> dict[str, str]:
    """This process's environment minus every service setting, plus the benchmark's own."""
    env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields or k in INHERITED}
    base_url = os.environ.get("DATABASE_URL", Settings.model_fields["DATABASE_URL"].default)
    env.update(
        DATABASE_URL=db.server_url(base_url, DATABASE),
        REDIS_KEY_PREFIX=REDIS_KEY_PREFIX,
        BROKER_PREFIX=BROKER_PREFIX,
        HOST=HOST,
        PORT=str(API_PORT),
        API_WORKERS="1",
        AUDIT_HEALTH_PORT=str(AUDIT_HEALTH_PORT),
        LOG_LEVEL="WARNING",
        BCRYPT_ROUNDS="4",  # one registration and a few logins; no login is measured
        PYTHONUNBUFFERED="1",
    )
    for name in SECRETS:
        env[name] = secrets.token_hex(32)
    return env


async def cleanup(settings: Settings) -> None:
    """Drop the benchmark's database, Redis keys and broker objects (also stale ones)."""
    problems = []

    async def drop_db() -> None:
        await db.drop_database(settings.DATABASE_URL)

    async def redis_keys() -> None:
        async with create_cache(settings) as cache:
            keys = [k async for k in cache.client.scan_iter(match=f"{REDIS_KEY_PREFIX}*")]
            for i in range(0, len(keys), 1000):
                await cache.client.delete(*keys[i : i + 1000])

    async def broker_objects() -> None:
        connection = await aio_pika.connect(settings.RABBITMQ_URL, timeout=5)
        async with connection:
            channel = await connection.channel()
            delays = {*settings.WEBHOOK_RETRY_DELAYS, *settings.CONSUMER_RETRY_DELAYS}
            delays.add(settings.WEBHOOK_DEFER_SECONDS)
            for name in TOPOLOGY.all_queues(sorted(delays)):
                await channel.queue_delete(name)
            await channel.exchange_delete(TOPOLOGY.exchange)

    for step in (drop_db, redis_keys, broker_objects):
        try:
            await step()
        except Exception as exc:  # noqa: BLE001 - keep cleaning the rest
            problems.append(f"{step.__name__}: {exc!r}")
    if problems:
        print("cleanup problems: " + "; ".join(problems), file=sys.stderr)


async def fresh_database(settings: Settings, days: int = 0) -> None:
    """Drop and recreate the benchmark's database, and make the daily partitions a replica's
    maintenance would have made by now, had it run for `days` days."""
    await db.drop_database(settings.DATABASE_URL)
    await prepare(settings)
    today = datetime.now(UTC).date()
    async with db.create_pool(settings) as pool, pool.acquire() as conn:
        for back in range(days, -1, -1):
            await store.ensure_partitions(conn, today - timedelta(days=back))


class Service:
    """One `python -m <module>` process, logging to a file."""

    def __init__(self, module: str, env: dict[str, str], log: Path, workdir: Path) -> None:
        self.module = module
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=workdir,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.module} exited with {self.proc.returncode}:\n{tail}")

    def wait_listening(self, port: int, timeout: float = 60) -> float:
        """The monotonic time at which `port` first accepted a connection."""
        deadline = time.monotonic() + timeout
        while not rb.port_in_use(port):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.module} not listening on {port} after {timeout:.0f} s")
            time.sleep(0.005)
        return time.monotonic()

    def wait_ready(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while rb.http("GET", url, timeout=2)[0] != 200:
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.module} not ready after {timeout:.0f} s: {url}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def idle_check(meter: rb.CpuMeter) -> dict[str, Any]:
    before = meter.snapshot()
    time.sleep(2)
    idle = meter.usage(before, meter.snapshot(), top=5)
    print(f"machine CPU while idle: {idle['machine']} cores", flush=True)
    if idle["machine"] > 0.2:
        print(
            f"  warning: the CPU is busy elsewhere ({rb.elsewhere(idle)}); figures will be "
            "lower and noisier",
            flush=True,
        )
    return idle


# --------------------------------------------------------------------------- profiles


class Profiler:
    """py-spy recording one process into a file of collapsed stacks until stopped."""

    def __init__(self, py_spy: str, pid: int, out: Path) -> None:
        self.out = out
        cmd = [py_spy, "record", "--pid", str(pid), "--rate", "200", "--format", "raw"]
        self.proc = subprocess.Popen(
            [*cmd, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def stop(self) -> dict[str, Any] | None:
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            print(f"    py-spy wrote no profile: {err.decode(errors='replace')[-500:]}", flush=True)
            return None
        return summarise_profile(self.out)


def frame_key(frame: str) -> str:
    """`name (path/file.py:123)` -> `name (path/file.py)`: a function, whatever the line."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def package_of(frame: str) -> str:
    path = frame.partition(" (")[2].rsplit(":", 1)[0]
    return path.split("/", 1)[0] if "/" in path else path.removesuffix(".py")


PROJECT = ("audit", "api", "shared")
# Standard-library plumbing whose time belongs to whoever called it (a socket write is
# charged to asyncpg when asyncpg sent the query).
GLUE = frozenset({"asyncio", "selectors", "socket", "contextlib", "functools", "_weakrefset"})
IDLE_WORKER = "_worker (concurrent/futures/thread.py"


def summarise_profile(path: Path, top: int = 25) -> dict[str, Any]:
    """Shares of the samples of one process: the function each sample was taken in (`self`);
    the package it was in, standard-library plumbing charged to its nearest caller outside it
    (`libraries`); and the project's functions anywhere on the stack (`project_inclusive`).
    py-spy also counts the thread pool's idle workers (waiting for work in C), which are left
    out and counted apart."""
    own: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_WORKER):
            idle += n
            continue
        total += n
        own[frame_key(frames[-1])] += n
        owner = next((package_of(f) for f in reversed(frames) if package_of(f) not in GLUE), None)
        libraries[owner or "asyncio event loop itself"] += n
        for key in {frame_key(f) for f in frames if package_of(f) in PROJECT}:
            inclusive[key] += n

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": k, "samples": v, "percent": round(100 * v / total, 1)}
            for k, v in counter.most_common(top)
        ]

    where = path.relative_to(rb.ROOT) if path.is_relative_to(rb.ROOT) else path
    return {
        "file": str(where),
        "samples": total,
        "idle_worker_samples_left_out": idle,
        "self": share(own),
        "libraries": share(libraries),
        "project_inclusive": share(inclusive),
    }


def print_profile(label: str, summary: dict[str, Any], top: int = 15) -> None:
    print(
        f"py-spy, {label}: {summary['samples']} samples, not counting "
        f"{summary['idle_worker_samples_left_out']} of idle thread-pool workers "
        f"({summary['file']})"
    )
    titles = (
        ("self", "where the samples were taken (self)"),
        ("libraries", "by package, asyncio/socket plumbing charged to its caller"),
        ("project_inclusive", "audit/api/shared functions, inclusive"),
    )
    for key, title in titles:
        print(f"  {title}:")
        for row in summary[key][:top]:
            print(f"    {row['percent']:5.1f}%  {row['function']}")
    print()


# --------------------------------------------------------------------------- 1. ingest


def failed_events(count: int, owners: int, users: int, seed: int) -> list[Event]:
    """`2fa.failed` events over `owners` owners and `users` userIds (each userId belongs to
    one owner), in random order."""
    rng = random.Random(seed)
    owner_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(owners)]
    events = []
    for _ in range(count):
        user = rng.randrange(users)
        owner = user % owners
        user_id = f"user-{user:05d}"
        events.append(
            Event.build(
                EventType.TWOFA_FAILED,
                {"userId": user_id, "method": "totp", "reason": "invalid_code"},
                ownerId=owner_ids[owner],
                userId=user_id,
                actor=Actor(kind="apiKey", id=f"bench-key-{owner:03d}"),
                ip=f"198.51.100.{user % 250 + 1}",
                userAgent=USER_AGENT,
            )
        )
    return events


async def publish(settings: Settings, events: list[Event]) -> float:
    """Publish the events to the events exchange with confirms; returns the seconds taken.
    The webhook dispatcher's queue (bound to the same types; no dispatcher runs here) is
    emptied afterwards."""
    started = time.monotonic()
    async with broker.connect(settings, "audit-bench") as connection:
        publisher = broker.Publisher(connection, TOPOLOGY)
        await publisher.ping()  # declares the topology
        for i in range(0, len(events), 1000):
            chunk = events[i : i + 1000]
            await asyncio.gather(
                *(publisher.publish(str(e.id), e.type.value, e.to_bytes()) for e in chunk)
            )
        seconds = time.monotonic() - started
        channel = await connection.channel()
        dispatcher = await channel.declare_queue(
            TOPOLOGY.queue(broker.WEBHOOK_DISPATCHER), passive=True
        )
        await dispatcher.purge()
    return seconds


async def purge_audit_queue(settings: Settings) -> None:
    connection = await aio_pika.connect(settings.RABBITMQ_URL, timeout=5)
    async with connection:
        channel = await connection.channel()
        await broker.declare_topology(channel, TOPOLOGY)
        queue = await channel.declare_queue(AUDIT_QUEUE, passive=True)
        await queue.purge()


PROGRESS_SQL = "SELECT coalesce(sum(last_seq), 0)::bigint FROM audit_chain_heads"
INTEGRITY_SQL = """
SELECT (SELECT count(*) FROM audit_log) AS entries,
       (SELECT count(DISTINCT event_id) FROM audit_log) AS distinct_events,
       (SELECT count(*) FROM audit_event_ids) AS claimed_ids,
       (SELECT count(*) FROM audit_chain_heads) AS owners,
       (SELECT count(DISTINCT recorded_at) FROM audit_log) AS batches
"""


async def wait_written(
    settings: Settings, target: int, replica: Service, poll: float = 0.05
) -> list[tuple[float, int]]:
    """(monotonic time, entries committed) samples until `target` entries are committed, or
    nothing new is committed for STALL_SECONDS."""
    conn = await asyncpg.connect(settings.DATABASE_URL)
    samples: list[tuple[float, int]] = []
    try:
        last_change = time.monotonic()
        while True:
            written = await conn.fetchval(PROGRESS_SQL)
            now = time.monotonic()
            if not samples or written != samples[-1][1]:
                samples.append((now, written))
                last_change = now
            if written >= target:
                return samples
            if now - last_change > STALL_SECONDS:
                print(f"    stalled at {written} entries", flush=True)
                return samples
            replica.check_alive()
            await asyncio.sleep(poll)
    finally:
        await conn.close()


def steady_rate(samples: list[tuple[float, int]], target: int) -> float | None:
    """Entries/s between the commits that passed 10% and 90% of the target: without the
    start-up and the last, partly filled batches."""
    low = next((s for s in samples if s[1] >= 0.1 * target), None)
    high = next((s for s in samples if s[1] >= 0.9 * target), None)
    if low is None or high is None or high[0] <= low[0]:
        return None
    return (high[1] - low[1]) / (high[0] - low[0])


def verify_chains(env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """`python -m audit.verify` over every owner: its summary line and exit status."""
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "audit.verify"],
        cwd=workdir,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    lines = out.stdout.strip().splitlines()
    broken = [line for line in lines if "BROKEN" in line]
    return {
        "exit_status": out.returncode,
        "summary": lines[-1] if lines else out.stderr.strip()[-500:],
        "broken": broken[:10],
        "seconds": round(time.monotonic() - started, 1),
    }


class Ingest:
    """The ingest runs: one fresh database, publish, one replica, per batch size."""

    def __init__(self, args: argparse.Namespace, env: dict[str, str], log_dir: Path) -> None:
        self.args = args
        self.env = env
        self.settings = rb.settings_of(env)
        self.log_dir = log_dir
        self.workdir = Path(tempfile.mkdtemp(prefix="tfa-bench-audit-"))
        self.profiles: dict[str, Any] = {}

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    def run(self, batch_size: int) -> dict[str, Any]:
        args, settings = self.args, self.settings
        n = args.events
        print(f"ingest, AUDIT_BATCH_SIZE={batch_size}: fresh database ...", flush=True)
        asyncio.run(fresh_database(settings))
        asyncio.run(purge_audit_queue(settings))
        events = failed_events(n, args.owners, args.users, seed=batch_size)
        publish_seconds = asyncio.run(publish(settings, events))
        depth = asyncio.run(rb.queue_depths(settings, [AUDIT_QUEUE]))[AUDIT_QUEUE]
        print(
            f"  published {n} events in {publish_seconds:.1f} s ({n / publish_seconds:.0f}/s, "
            f"confirmed); {depth} waiting in {AUDIT_QUEUE}; starting one replica ...",
            flush=True,
        )
        env = {**self.env, "AUDIT_BATCH_SIZE": str(batch_size)}
        replica = Service("audit", env, self.log_dir / f"audit-batch{batch_size}.log", self.workdir)
        profiler = None
        try:
            started = replica.wait_listening(AUDIT_HEALTH_PORT)
            meter = rb.CpuMeter({"audit": replica.pid})
            before = meter.snapshot()
            if args.profile:
                out = args.profile_dir / f"audit-replica-batch{batch_size}.txt"
                profiler = Profiler(args.py_spy, replica.pid, out)
            samples = asyncio.run(wait_written(settings, n, replica))
            cpu = meter.usage(before, meter.snapshot(), top=5)
            # Started for this run: its peak since it started is this run's.
            peak = PeakRss({"audit": [replica.pid]}).stop()
            if profiler is not None and (summary := profiler.stop()) is not None:
                self.profiles[f"audit replica, AUDIT_BATCH_SIZE={batch_size}"] = summary
                profiler = None
        finally:
            if profiler is not None:
                profiler.stop()
            replica.stop()
        done_at, written = samples[-1] if samples else (started, 0)
        seconds = done_at - started
        rate = written / seconds if seconds > 0 else 0.0
        steady = steady_rate(samples, n)
        first = next((s for s in samples if s[1] > 0), None)
        check = asyncio.run(self.integrity())
        queues = asyncio.run(rb.queue_depths(settings, [AUDIT_QUEUE, TOPOLOGY.dlq(broker.AUDIT)]))
        chains = verify_chains(self.env, self.workdir)
        cpu["replica"] = cpu.pop("consumers")
        result = {
            "batch_size": batch_size,
            "prefetch": settings.AUDIT_PREFETCH,
            "events": n,
            "owners": args.owners,
            "user_ids": args.users,
            "publish_seconds": round(publish_seconds, 2),
            "written": written,
            "seconds": round(seconds, 2),
            "events_per_second": round(rate),
            "steady_events_per_second": round(steady) if steady else None,
            "first_commit_after_seconds": round(first[0] - started, 2) if first else None,
            "cpu_cores": cpu,
            "peak_rss_mb": peak["mb"],
            "replica_cpu_ms_per_event": round(1000 * cpu["replica"] * seconds / written, 3)
            if written
            else None,
            "postgres_cpu_ms_per_event": round(1000 * cpu["postgres"] * seconds / written, 3)
            if written
            else None,
            "integrity": check,
            "queues_after": queues,
            "chains": chains,
        }
        print(
            f"    {rate:.0f} events/s over {seconds:.1f} s (steady "
            f"{result['steady_events_per_second']}/s); replica {cpu['replica']} cores, postgres "
            f"{cpu['postgres']}, rabbitmq {cpu['rabbitmq']}, machine {cpu['machine']}; entries "
            f"{check['entries']}, distinct event ids {check['distinct_events']}, "
            f"{check['batches']} batches; chains: {chains['summary']}",
            flush=True,
        )
        rb.warn_disturbed(cpu, "these figures are")
        return result

    async def integrity(self) -> dict[str, int]:
        conn = await asyncpg.connect(self.settings.DATABASE_URL)
        try:
            return dict(await conn.fetchrow(INTEGRITY_SQL))
        finally:
            await conn.close()


# --------------------------------------------------------------------------- 2. queries


@dataclass(frozen=True)
class FillPlan:
    entries: int
    hot_owner: uuid.UUID
    hot_share: float
    hot_users: int
    other_owners: int
    other_users: int
    days: int
    seed: int = 1


def fill_batches(plan: FillPlan, end: datetime) -> Iterator[tuple[datetime, list[Event]]]:
    """Batches of FILL_BATCH events, each with the time it is recorded at: spread evenly over
    `plan.days` days up to `end`, oldest first (as the writer would have recorded them). Each
    event occurred up to 2 s before its batch was recorded."""
    rng = random.Random(plan.seed)
    others = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(plan.other_owners)]
    types = [t for t, _ in TYPE_MIX]
    weights = [w for _, w in TYPE_MIX]
    batches = -(-plan.entries // FILL_BATCH)
    start = end - timedelta(days=plan.days)
    step = (end - start) / batches
    for b in range(batches):
        recorded = start + step * (b + 1)
        size = min(FILL_BATCH, plan.entries - b * FILL_BATCH)
        events = []
        for _ in range(size):
            if rng.random() < plan.hot_share:
                owner, user = plan.hot_owner, rng.randrange(plan.hot_users)
            else:
                owner, user = rng.choice(others), rng.randrange(plan.other_users)
            user_id = f"user-{user:05d}"
            kind = rng.choices(types, weights)[0]
            data: TwoFactorData | TwoFactorFailedData
            if kind is EventType.TWOFA_FAILED:
                data = TwoFactorFailedData(
                    userId=user_id, method="totp", reason="invalid_code", attemptsRemaining=4
                )
            else:
                data = TwoFactorData(userId=user_id, method="totp")
            events.append(
                Event.build(
                    kind,
                    data,
                    ownerId=owner,
                    userId=user_id,
                    actor=Actor(kind="apiKey", id="bench-key"),
                    ip=f"198.51.100.{user % 250 + 1}",
                    userAgent=USER_AGENT,
                    occurredAt=recorded - timedelta(seconds=2 * rng.random()),
                )
            )
        yield recorded, events


async def fill(settings: Settings, plan: FillPlan) -> dict[str, Any]:
    """Write the plan's entries with the audit writer's own `store.write_batch`."""
    end = datetime.now(UTC) - timedelta(minutes=1)
    started = time.monotonic()
    built = written = 0
    async with db.create_pool(settings) as pool, pool.acquire() as conn:
        for recorded, events in fill_batches(plan, end):
            built += len(events)
            written += await store.write_batch(conn, events, now=recorded)
            if written % 100_000 < FILL_BATCH:
                print(
                    f"    {written} entries written ({time.monotonic() - started:.0f} s)",
                    flush=True,
                )
        seconds = time.monotonic() - started
        vacuum_started = time.monotonic()
        await conn.execute("VACUUM (ANALYZE) audit_log", timeout=3600)
        await conn.execute("VACUUM (ANALYZE) audit_event_ids", timeout=3600)
        await conn.execute("ANALYZE audit_chain_heads")
        vacuum_seconds = time.monotonic() - vacuum_started
        counts = await conn.fetchrow(
            "SELECT count(*) AS entries, count(*) FILTER (WHERE owner_id = $1) AS hot, "
            "count(DISTINCT owner_id) AS owners, min(recorded_at) AS oldest, "
            "max(recorded_at) AS newest FROM audit_log",
            plan.hot_owner,
        )
        partitions = await conn.fetchval(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE p.relname = 'audit_log'"
        )
        size = await conn.fetchval("SELECT pg_size_pretty(pg_database_size(current_database()))")
    return {
        "entries": counts["entries"],
        "hot_owner_entries": counts["hot"],
        "owners": counts["owners"],
        "recorded_from": counts["oldest"].isoformat(),
        "recorded_to": counts["newest"].isoformat(),
        "partitions": partitions,
        "database_size": size,
        "seconds": round(seconds, 1),
        "entries_per_second": round(written / seconds),
        "vacuum_analyze_seconds": round(vacuum_seconds, 1),
        "batch": FILL_BATCH,
    }


@dataclass(frozen=True)
class Query:
    name: str
    label: str
    paths: list[str]
    filters: audit_read.Filters  # of the first path, for EXPLAIN
    cursor: str | None = None
    limit: int = 50


def path(**params: Any) -> str:
    query = {k: v for k, v in params.items() if v is not None}
    return "/api/audit-logs" + ("?" + urlencode(query) if query else "")


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


async def walk_pages(base: str, token: str, limit: int = 200) -> dict[str, Any]:
    """Follow nextCursor from the first page of the hot owner to the last: every cursor, and
    the latency of each page (one client, one request at a time)."""
    cursors: list[str] = []
    latencies = []
    headers = {"Authorization": f"Bearer {token}"}
    entries = 0
    async with aiohttp.ClientSession(headers=headers) as session:
        cursor: str | None = None
        while True:
            sent = time.monotonic()
            async with session.get(f"{base}{path(limit=limit, cursor=cursor)}") as r:
                body = await r.json()
                if r.status != 200:
                    raise RuntimeError(f"walking the pages: {r.status} {body}")
            latencies.append(1000 * (time.monotonic() - sent))
            entries += len(body["data"])
            cursor = body["nextCursor"]
            if cursor is None:
                break
            cursors.append(cursor)
    latencies.sort()
    return {
        "cursors": cursors,
        "pages": len(latencies),
        "entries": entries,
        "limit": limit,
        "seconds": round(sum(latencies) / 1000, 1),
        "latency_ms": {
            "p50": round(latencies[len(latencies) // 2], 2),
            "p99": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2),
            "max": round(latencies[-1], 2),
        },
    }


async def users_of(settings: Settings, owner: uuid.UUID) -> list[str]:
    """The userIds the owner's entries name (a userId filter naming another answers 404)."""
    conn = await asyncpg.connect(settings.DATABASE_URL)
    try:
        rows = await conn.fetch(
            "SELECT DISTINCT user_id FROM audit_log WHERE owner_id = $1 AND user_id IS NOT NULL",
            owner,
        )
    finally:
        await conn.close()
    users = sorted(r["user_id"] for r in rows)
    random.Random(2).shuffle(users)
    return users


def queries(users: list[str], cursors: list[str], now: datetime) -> list[Query]:
    types = [t.value for t, _ in TYPE_MIX]
    day = timedelta(days=1)
    week_ago = now - timedelta(days=7)
    deep = cursors[len(cursors) // 10 :]  # from a tenth of the way down to the end
    return [
        Query("first-page", "first page, no filter", [path()], audit_read.Filters()),
        Query(
            "user",
            f"userId= (one of {len(users)}, in turn)",
            [path(userId=u) for u in users],
            audit_read.Filters(user_id=users[0]),
        ),
        Query(
            "event",
            f"event= (each of {len(types)} types in turn)",
            [path(event=t) for t in types],
            audit_read.Filters(event=types[-1]),
        ),
        Query(
            "range-recent",
            "from/to: the last 24 h",
            [path(**{"from": iso(now - day), "to": iso(now)})],
            audit_read.Filters(occurred_from=now - day, occurred_to=now),
        ),
        Query(
            "range-week-ago",
            "from/to: 24 h, a week back",
            [path(**{"from": iso(week_ago - day), "to": iso(week_ago)})],
            audit_read.Filters(occurred_from=week_ago - day, occurred_to=week_ago),
        ),
        Query(
            "deep-pages",
            f"cursor= (nextCursor of {len(deep)} deep pages, in turn)",
            [path(cursor=c) for c in deep],
            audit_read.Filters(),
            cursor=deep[len(deep) // 2] if deep else None,
        ),
    ]


async def first_answer(base: str, token: str, query: Query) -> dict[str, Any]:
    """The first path's answer, so a query that returns nothing is noticed."""
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(f"{base}{query.paths[0]}") as r:
            body = await r.json()
    return {
        "status": r.status,
        "entries": len(body.get("data") or []),
        "has_next_cursor": bool(body.get("nextCursor")),
    }


async def explain(settings: Settings, owner: uuid.UUID, query: Query) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the query's SQL as api.domain.audit.page builds it, with
    the first path's parameters (and of the userId check, for a userId filter)."""
    sql, args = audit_read.page_query(owner, query.filters, query.limit, query.cursor)
    conn = await asyncpg.connect(settings.DATABASE_URL)
    try:
        await db.init_connection(conn)
        plans = {"page": await _explain(conn, sql, args)}
        if query.filters.user_id is not None:
            user_args = [owner, query.filters.user_id]
            plans["user_check"] = await _explain(conn, audit_read.USER_KNOWN_SQL, user_args)
    finally:
        await conn.close()
    return plans


async def _explain(conn: asyncpg.Connection, sql: str, args: list[Any]) -> dict[str, Any]:
    await conn.fetch(sql, *args)  # warm, as the running API's cache is
    rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + sql, *args)
    text = [r[0] for r in rows]
    figures = {}
    for line in text:
        for key in ("Planning Time", "Execution Time"):
            if line.strip().startswith(key):
                name = key.lower().replace(" ", "_") + "_ms"
                figures[name] = float(line.split(":")[1].split()[0])
    return {**figures, "plan": text}


class Queries:
    """The query runs: the API, the filled table, wrk."""

    def __init__(self, args: argparse.Namespace, env: dict[str, str], log_dir: Path) -> None:
        self.args = args
        self.env = env
        self.settings = rb.settings_of(env)
        self.log_dir = log_dir
        self.base = f"http://{HOST}:{API_PORT}"
        self.workdir = Path(tempfile.mkdtemp(prefix="tfa-bench-audit-"))
        self.api: Service | None = None
        self.profiles: dict[str, Any] = {}

    def close(self) -> None:
        if self.api is not None:
            self.api.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def run(self) -> dict[str, Any]:
        args, settings = self.args, self.settings
        print(
            f"queries: fresh database, daily partitions from {args.days + 1} days back ...",
            flush=True,
        )
        asyncio.run(fresh_database(settings, days=args.days))
        self.api = Service("api", self.env, self.log_dir / "api.log", self.workdir)
        self.api.wait_ready(f"{self.base}/api/health/ready")
        account = rb.setup_account(self.base)
        token = rb.access_token(self.base, account)
        status, me = rb.http(
            "GET", f"{self.base}/api/auth/me", headers={"Authorization": f"Bearer {token}"}
        )
        if status != 200:
            raise RuntimeError(f"/api/auth/me: {status} {me}")
        plan = FillPlan(
            entries=args.entries,
            hot_owner=uuid.UUID(me["data"]["id"]),
            hot_share=args.hot_share,
            hot_users=args.hot_users,
            other_owners=args.other_owners,
            other_users=args.other_users,
            days=args.days,
        )
        print(
            f"  filling audit_log with {plan.entries} entries (write_batch, {FILL_BATCH} a "
            f"batch), {plan.hot_share:.0%} for the hot owner (the bench account, "
            f"{plan.hot_users} userIds), the rest over {plan.other_owners} owners; recorded "
            f"over {plan.days} days ...",
            flush=True,
        )
        filled = asyncio.run(fill(settings, plan))
        print(
            f"  {filled['entries']} entries ({filled['hot_owner_entries']} of the hot owner, "
            f"{filled['owners']} owners) in {filled['seconds']} s ({filled['entries_per_second']}"
            f"/s), {filled['partitions']} partitions, database {filled['database_size']}; "
            f"VACUUM ANALYZE {filled['vacuum_analyze_seconds']} s; verifying the chains ...",
            flush=True,
        )
        chains = verify_chains(self.env, self.workdir)
        print(f"  chains: {chains['summary']} ({chains['seconds']} s)", flush=True)
        walk = asyncio.run(walk_pages(self.base, token))
        print(
            f"  followed nextCursor through the hot owner's {walk['entries']} entries: "
            f"{walk['pages']} pages of {walk['limit']} in {walk['seconds']} s, one at a time "
            f"(p50 {walk['latency_ms']['p50']} ms, p99 {walk['latency_ms']['p99']} ms)",
            flush=True,
        )
        lua = self.workdir / "paths.lua"
        lua.write_text(PATHS_LUA)
        meter = rb.CpuMeter({"api": self.api.pid})
        results = []
        users = asyncio.run(users_of(settings, plan.hot_owner))
        for query in queries(users, walk.pop("cursors"), datetime.now(UTC)):
            token = rb.access_token(self.base, account)  # fresh: tokens expire
            answer = asyncio.run(first_answer(self.base, token, query))
            paths = self.workdir / f"paths-{query.name}.txt"
            paths.write_text("\n".join(query.paths) + "\n")
            wrk_env = {
                **os.environ,
                "BENCH_LUA_DIR": str(rb.LUA),
                "BENCH_PATHS": str(paths),
                "BENCH_ACCESS_TOKEN": token,
            }
            runs = []
            for conns in args.connections:
                runs.append(self.measure(query, conns, lua, wrk_env, meter))
            plans = asyncio.run(explain(settings, plan.hot_owner, query))
            page = plans["page"]
            print(
                f"    EXPLAIN ANALYZE: planning {page.get('planning_time_ms')} ms, execution "
                f"{page.get('execution_time_ms')} ms"
                + (
                    f"; userId check {plans['user_check'].get('execution_time_ms')} ms"
                    if "user_check" in plans
                    else ""
                ),
                flush=True,
            )
            results.append(
                {
                    "query": query.name,
                    "label": query.label,
                    "paths": len(query.paths),
                    "example_path": query.paths[0],
                    "first_answer": answer,
                    "runs": runs,
                    "explain": plans,
                }
            )
        return {
            "fill": {**filled, "plan": {k: str(v) for k, v in plan.__dict__.items()}},
            "chains": chains,
            "walk": walk,
            "queries": results,
        }

    def measure(
        self, query: Query, conns: int, lua: Path, env: dict[str, str], meter: rb.CpuMeter
    ) -> dict[str, Any]:
        args = self.args
        assert self.api is not None
        label = f"{query.label} c={conns}"
        if args.warmup:
            self.wrk(conns, args.warmup, lua, env)
        rb.quiesce(meter)
        print(f"  {label}: measuring {args.duration} s ...", flush=True)
        profiler = None
        if args.profile:
            out = args.profile_dir / f"api-{query.name}-c{conns}.txt"
            profiler = Profiler(args.py_spy, self.api.pid, out)
        before = meter.snapshot()
        raw, human = self.wrk(conns, args.duration, lua, env)
        cpu = meter.usage(before, meter.snapshot(), top=5)
        if profiler is not None and (summary := profiler.stop()) is not None:
            self.profiles[f"API, {query.name}, {conns} connections"] = summary
        self.api.check_alive()
        summary = rb.summarise(raw)
        lat = summary["latency_ms"]
        print(
            f"    {summary['requests_per_second']:.0f} req/s, p50 {lat['p50']} ms, p99 "
            f"{lat['p99']} ms, {summary['requests']} requests, errors "
            f"{summary['socket_errors']} socket / {summary['unexpected']} status >= 400; CPU "
            f"api {cpu['api']} postgres {cpu['postgres']} wrk {cpu['wrk']} machine "
            f"{cpu['machine']} cores",
            flush=True,
        )
        rb.warn_disturbed(cpu, "these figures are")
        return {
            "connections": conns,
            "threads": min(args.threads, conns),
            "warmup_seconds": args.warmup,
            "duration_seconds": args.duration,
            "result": summary,
            "cpu_cores": cpu,
            "wrk_output": human,
        }

    def wrk(
        self, conns: int, seconds: int, lua: Path, env: dict[str, str]
    ) -> tuple[dict[str, Any], str]:
        threads = min(self.args.threads, conns)
        cmd = [
            "wrk",
            f"-t{threads}",
            f"-c{conns}",
            f"-d{seconds}s",
            f"--timeout={self.args.timeout}s",
            "--latency",
            "-s",
            str(lua),
            f"{self.base}/api/audit-logs",
        ]
        out = subprocess.run(
            cmd, check=False, capture_output=True, text=True, env=env, timeout=seconds + 120
        )
        lines = [line for line in out.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
        if out.returncode != 0 or not lines:
            raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")
        human = "\n".join(x for x in out.stdout.splitlines() if not x.startswith("BENCH_RESULT "))
        return json.loads(lines[-1][len("BENCH_RESULT ") :]), human


# --------------------------------------------------------------------------- report


def print_ingest(runs: list[dict[str, Any]]) -> None:
    print()
    head = (
        f"{'AUDIT_BATCH_SIZE':>16} {'events':>8} {'seconds':>8} {'events/s':>9} {'steady/s':>9} "
        f"{'replica':>8} {'postgres':>9} {'rabbitmq':>9} {'other':>6} {'machine':>8} "
        f"{'ms/event':>9} {'distinct':>9} {'chains':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in runs:
        cpu, check = r["cpu_cores"], r["integrity"]
        chains = "ok" if r["chains"]["exit_status"] == 0 else "BROKEN"
        steady = r["steady_events_per_second"] or 0
        print(
            f"{r['batch_size']:>16} {r['written']:>8} {r['seconds']:>8.1f} "
            f"{r['events_per_second']:>9} {steady:>9} {cpu['replica']:>8.2f} "
            f"{cpu['postgres']:>9.2f} {cpu['rabbitmq']:>9.2f} {cpu['other']:>6.2f} "
            f"{cpu['machine']:>8.2f} {r['replica_cpu_ms_per_event'] or 0:>9.3f} "
            f"{check['distinct_events']:>9} {chains:>7}"
        )
    print(
        f"(events/s = entries committed / seconds from the replica's health port opening to the "
        f"last commit; steady = between 10% and 90% of them; CPU in cores over that time (1.00 "
        f"= one core busy); ms/event = the replica's CPU per entry; target "
        f"{TARGET_EVENTS_PER_SECOND}/s per replica)"
    )
    best = max(runs, key=lambda r: r["events_per_second"])
    print(f"(fastest: AUDIT_BATCH_SIZE={best['batch_size']}, {best['events_per_second']}/s)")


def print_queries(report: dict[str, Any]) -> None:
    rows = report["queries"]
    width = max(len(r["label"]) for r in rows)
    print()
    head = (
        f"{'GET /api/audit-logs':<{width}} {'conns':>5} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'err/bad':>8} {'api':>5} {'pg':>5} {'wrk':>5} {'machine':>7} "
        f"{'explain ms':>10}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        executed = r["explain"]["page"].get("execution_time_ms")
        for run in r["runs"]:
            s, c = run["result"], run["cpu_cores"]
            lat = s["latency_ms"]
            print(
                f"{r['label']:<{width}} {run['connections']:>5} {s['requests_per_second']:>7.0f} "
                f"{lat['p50']:>8.2f} {lat['p99']:>8.2f} {lat['max']:>8.1f} "
                f"{s['socket_errors']:>4}/{s['unexpected']:<3} {c['api']:>5.2f} "
                f"{c['postgres']:>5.2f} {c['wrk']:>5.2f} {c['machine']:>7.2f} "
                f"{executed if executed is not None else '':>10}"
            )
    print(
        f"(one API process; pages of 50 for the hot owner; err/bad = socket errors / statuses >= "
        f"400; CPU in cores; explain ms = the page query's execution time under EXPLAIN ANALYZE, "
        f"one run; target p99 < {TARGET_P99_MS} ms)"
    )
    print()


# --------------------------------------------------------------------------- main


def numbers(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("ingest", "queries"), help="run only one part")
    parser.add_argument(
        "--events", type=int, default=100_000, help="events per ingest run (default 100000)"
    )
    parser.add_argument(
        "--batch-sizes",
        type=numbers,
        default=[500, 200, 2000],
        help="AUDIT_BATCH_SIZE of each ingest run, comma-separated (default 500,200,2000)",
    )
    parser.add_argument("--owners", type=int, default=50, help="ingest: owners (default 50)")
    parser.add_argument("--users", type=int, default=5000, help="ingest: userIds (default 5000)")
    parser.add_argument(
        "--entries", type=int, default=1_000_000, help="queries: entries (default 1000000)"
    )
    parser.add_argument(
        "--hot-share",
        type=float,
        default=0.4,
        help="queries: the hot owner's share of the entries (default 0.4)",
    )
    parser.add_argument(
        "--hot-users", type=int, default=5000, help="queries: the hot owner's userIds (5000)"
    )
    parser.add_argument(
        "--other-owners", type=int, default=200, help="queries: the other owners (default 200)"
    )
    parser.add_argument(
        "--other-users", type=int, default=500, help="queries: userIds per other owner (500)"
    )
    parser.add_argument(
        "--days",
        type=int,
        default=30,
        help="queries: days the entries were recorded over, one partition each (default 30)",
    )
    parser.add_argument(
        "--connections",
        type=numbers,
        default=[16, 64],
        help="queries: wrk connections, comma-separated (default 16,64)",
    )
    parser.add_argument(
        "--duration", type=int, default=10, help="queries: measured seconds (default 10)"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="queries: warm-up seconds (default 2)"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--timeout", type=int, default=30, help="wrk timeout, s (default 30)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy on the replica (ingest) and the API (queries); figures then a little low",
    )
    parser.add_argument(
        "--out", type=Path, help="write the JSON here (default bench/results/audit-<time>.json)"
    )
    args = parser.parse_args()
    args.py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if args.profile and not os.access(args.py_spy, os.X_OK):
        print("--profile needs py-spy: .venv/bin/pip install py-spy", file=sys.stderr)
        return 1
    if args.only != "ingest" and shutil.which("wrk") is None:
        print("wrk is not installed (make bench-audit installs it)", file=sys.stderr)
        return 1
    busy = [p for p in (API_PORT, AUDIT_HEALTH_PORT) if rb.port_in_use(p)]
    if busy:
        print(
            f"port(s) {', '.join(map(str, busy))} on {HOST} already in use; is another audit "
            "benchmark running?",
            file=sys.stderr,
        )
        return 1

    source = rb.git_state()
    dirty = source["uncommitted_changes_outside_bench"]
    print(
        f"measuring commit {(source['commit'] or 'unknown')[:12]}"
        + (f" plus {len(dirty)} uncommitted change(s) outside bench/" if dirty else "")
        + f"; this machine has {os.cpu_count()} cores ({rb.cpu_model()})",
        flush=True,
    )
    env = service_env()
    settings = rb.settings_of(env)
    configure_logging(settings, "bench")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    rb.RESULTS.mkdir(parents=True, exist_ok=True)
    log_dir = rb.RESULTS / f"audit-logs-{stamp}"
    log_dir.mkdir(parents=True)
    args.profile_dir = rb.RESULTS / f"audit-profile-{stamp}"
    if args.profile:
        args.profile_dir.mkdir(parents=True)

    def on_term(signum: int, _: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    ingest = Ingest(args, env, log_dir)
    reads = Queries(args, env, log_dir)
    report: dict[str, Any] = {}
    try:
        asyncio.run(cleanup(settings))  # leftovers of an interrupted run
        report["idle_cpu_cores"] = idle_check(rb.CpuMeter({}))
        if args.only != "queries":
            report["ingest"] = [ingest.run(size) for size in args.batch_sizes]
        if args.only != "ingest":
            report["queries"] = reads.run()
    except KeyboardInterrupt:
        print("interrupted; stopping", file=sys.stderr)
        return 130
    finally:
        ingest.close()
        reads.close()
        asyncio.run(cleanup(settings))

    if "ingest" in report:
        print_ingest(report["ingest"])
    if "queries" in report:
        print_queries(report["queries"])
    profiles = {**ingest.profiles, **reads.profiles}
    for label, summary in profiles.items():
        print_profile(label, summary)
    report = {
        "started_utc": stamp,
        "command": " ".join(["bench/audit_bench.py", *sys.argv[1:]]),
        "source": source,
        "machine": rb.machine(wrk=True),
        "settings": {
            "database": DATABASE,
            "redis_key_prefix": REDIS_KEY_PREFIX,
            "broker_prefix": BROKER_PREFIX,
            "api_port": API_PORT,
            "api_workers": settings.API_WORKERS,
            "audit_health_port": AUDIT_HEALTH_PORT,
            "audit_prefetch": settings.AUDIT_PREFETCH,
            "db_pool_max": settings.DB_POOL_MAX,
            "log_level": settings.LOG_LEVEL,
            "profiled_with_py_spy": args.profile,
            "targets": {
                "events_per_second_per_replica": TARGET_EVENTS_PER_SECOND,
                "p99_ms": TARGET_P99_MS,
            },
        },
        **report,
        "profiles": profiles,
    }
    out = args.out or rb.RESULTS / f"audit-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
