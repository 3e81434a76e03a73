"""Webhook dispatcher benchmark: deliveries per second with one and with two replicas, and the
end-to-end latency from an API call to the webhook's arrival. Prints its figures; asserts nothing.

`bash bench/webhooks.sh` (or `make bench-webhooks`) runs this with the venv's Python. It starts
its own system with bench/run_bench.py's settings and clean-up (database tfa_bench, API on
127.0.0.1:3101, Redis prefix `tfa-bench:`, broker prefix `bench.`, LOG_LEVEL=WARNING, fresh
secrets), plus WEBHOOK_ALLOW_PRIVATE_URLS=true, API_WORKERS from `--api-workers` and the default
dispatcher settings. The API, the notifier and the audit consumer run throughout; the dispatcher
replicas are started and stopped by each measurement (health ports 3103 and 3106). The receiver
is a raw asyncio HTTP/1.1 server in a process of its own (127.0.0.1:3105): it answers every
POST with 200 and a two-byte body on a keep-alive connection and counts the deliveries by
`X-Webhook-Id`. The bench account has one webhook, subscribed to `2fa.failed`, pointing at it.

1. The receiver alone: wrk posts webhook-sized requests at it (32 connections), so its capacity
   is known to be above the dispatcher's.
2. Throughput: with no dispatcher running, N `2fa.failed` events of the bench account are
   published straight to the events exchange (publisher confirms, routing key = type); once the
   audit consumer has drained its copy, 1 (then 2) replicas start. The rate is N over the time
   from the first arrival to the arrival that completes N distinct ids. Then the delivery log
   is checked: one `webhook_attempts` row per event, and the receiver saw each id exactly once.
   A warm-up run with fewer events comes first and is not reported.
3. Latency: end users with TOTP on are enrolled through the API; wrong codes are sent to
   `POST /api/2fa/verify` open-loop at a fixed rate (each request at its own time, whatever the
   answers), at most `--attempts-per-user` per user. Each 401 emits `2fa.failed`, which the
   receiver matches by (data.userId, data.attemptsRemaining), the pair the API also answered
   with. Latency = arrival - the moment the request was sent, through the API's outbox, its
   relay, RabbitMQ and one dispatcher replica. Sender and receiver are separate processes; both
   read `time.monotonic()`, which on Linux is CLOCK_MONOTONIC, one clock for the whole machine.

With `--profile`, py-spy samples the first dispatcher replica during the measured runs (their
figures are then a little low; take figures from a run without it) and the top functions are
printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import run_bench as rb
from procstats import PeakRss

from shared import broker
from shared.config import Settings
from shared.events import Actor, Event, EventType, TwoFactorFailedData
from shared.logs import configure_logging
from shared.migrate import prepare

HOST = rb.HOST
RECEIVER_PORT = 3105
SECOND_REPLICA_PORT = 3106
HOOK_PATH = "/hook"
BASE_SERVICES = {m: p for m, p in rb.SERVICES.items() if m != "webhook_dispatcher"}
REPLICA_PORTS = (3103, SECOND_REPLICA_PORT)
QUEUE = f"{rb.BROKER_PREFIX}{broker.WEBHOOK_DISPATCHER}"
AUDIT_QUEUE = f"{rb.BROKER_PREFIX}{broker.AUDIT}"
NOTIFIER_QUEUE = f"{rb.BROKER_PREFIX}{broker.NOTIFIER}"
STALL_SECONDS = 30  # no new arrival for this long: the run is reported as stalled
TARGET_RATE = 1000  # deliveries/s per replica (the target)
TARGET_P99_MS = 250

# --------------------------------------------------------------------------- the receiver

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def json_response(value: Any) -> bytes:
    body = json.dumps(value).encode()
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nContent-Type: application/json\r\n"
    return head.encode() + b"\r\n" + body


class Tally:
    """What the receiver has seen since the last reset: deliveries by id, and (when asked) each
    body with its arrival time."""

    def __init__(self) -> None:
        self.reset(keep_bodies=False)

    def reset(self, *, keep_bodies: bool) -> None:
        self.keep_bodies = keep_bodies
        self.requests = 0
        self.ids: dict[str, int] = {}
        self.first: float | None = None
        self.last_new: float | None = None
        self.bodies: list[tuple[float, bytes]] = []

    def hook(self, now: float, webhook_id: str, body: bytes) -> None:
        self.requests += 1
        if self.first is None:
            self.first = now
        seen = self.ids.get(webhook_id, 0)
        self.ids[webhook_id] = seen + 1
        if not seen:
            self.last_new = now
        if self.keep_bodies:
            self.bodies.append((now, body))

    def brief(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "distinct": len(self.ids),
            "first": self.first,
            "last_new": self.last_new,
        }

    def full(self) -> dict[str, Any]:
        arrivals = []
        for now, body in self.bodies:
            event = json.loads(body)
            data = event.get("data", {})
            arrivals.append(
                [now, event.get("id"), data.get("userId"), data.get("attemptsRemaining")]
            )
        return {**self.brief(), "ids": self.ids, "arrivals": arrivals}


class ReceiverProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1 with keep-alive: requests with a Content-Length body, in order."""

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            lines = bytes(self.buffer[:end]).split(b"\r\n")
            method, target = lines[0].split(b" ")[:2]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get(b"content-length", b"0"))
            if len(self.buffer) < end + 4 + length:
                return  # the body is still coming
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            assert self.transport is not None
            self.transport.write(self.answer(now, method, target, headers, body))

    def answer(
        self, now: float, method: bytes, target: bytes, headers: dict[bytes, bytes], body: bytes
    ) -> bytes:
        if method == b"POST" and target == HOOK_PATH.encode():
            self.tally.hook(now, headers.get(b"x-webhook-id", b"").decode(), body)
            return OK
        if target == b"/stats":
            return json_response(self.tally.brief())
        if target == b"/dump":
            return json_response(self.tally.full())
        if method == b"POST" and target == b"/reset":
            self.tally.reset(keep_bodies=bool(json.loads(body or b"{}").get("keepBodies")))
            return json_response({"reset": True})
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


async def serve_receiver(port: int) -> None:
    loop = asyncio.get_running_loop()
    tally = Tally()
    server = await loop.create_server(lambda: ReceiverProtocol(tally), HOST, port, backlog=1024)
    print(f"receiver listening on {HOST}:{port}", flush=True)
    async with server:
        await server.serve_forever()


class Receiver:
    """The receiver process and its control endpoints."""

    def __init__(self, log_dir: Path) -> None:
        self.url = f"http://{HOST}:{RECEIVER_PORT}"
        with open(log_dir / "receiver.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, "--serve-receiver", str(RECEIVER_PORT)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while rb.http("GET", f"{self.url}/stats", timeout=2)[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the receiver did not start (see {log_dir}/receiver.log)")
            time.sleep(0.1)

    def reset(self, *, keep_bodies: bool) -> None:
        rb.http("POST", f"{self.url}/reset", {"keepBodies": keep_bodies})

    def stats(self) -> dict[str, Any]:
        status, body = rb.http("GET", f"{self.url}/stats", timeout=10)
        if status != 200 or not isinstance(body, dict):
            raise RuntimeError(f"receiver /stats: {status} {body}")
        return body

    def dump(self) -> dict[str, Any]:
        status, body = rb.http("GET", f"{self.url}/dump", timeout=60)
        if status != 200 or not isinstance(body, dict):
            raise RuntimeError(f"receiver /dump: {status} {body}")
        return body

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------- processes and CPU


def proc_stats() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds so far) for every process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 1 :].split()
        found[int(entry.name)] = (
            int(fields[1]),
            comm,
            (int(fields[11]) + int(fields[12])) / rb.CLK_TCK,
        )
    return found


def cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 1 :].split()
    return (int(fields[11]) + int(fields[12])) / rb.CLK_TCK


def cpu_times() -> list[int]:
    """The machine's jiffies: user nice system idle iowait irq softirq steal."""
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:9]]


class Meter:
    """Cores used per group over an interval: the dispatcher replicas, the API (with its
    workers), the other consumers, the receiver, this process, PostgreSQL, RabbitMQ, Redis."""

    def __init__(self, system: rb.System, receiver: Receiver, replicas: Replicas) -> None:
        self.system = system
        self.receiver = receiver
        self.replicas = replicas

    def snapshot(self) -> dict[str, Any]:
        procs = proc_stats()
        return {
            "t": time.monotonic(),
            "procs": procs,
            "groups": self.groups(procs),  # now: the replicas may be gone at the end
            "machine": rb.machine_jiffies(),
            "stat": cpu_times(),
        }

    def groups(self, procs: dict[int, tuple[int, str, float]]) -> dict[int, str]:
        named = {pid: "dispatcher" for pid in self.replicas.pids()}
        named[self.receiver.proc.pid] = "receiver"
        named[os.getpid()] = "bench"
        for module, pid in self.system.pids().items():
            named[pid] = "api" if module == "api" else "audit+notifier"
        api = self.system.pids()["api"]
        for pid, (ppid, _, _) in procs.items():
            if ppid == api:
                named[pid] = "api"  # API_WORKERS > 1: the workers are its children
        return named

    def usage(self, start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
        """Cores per group; 'other' is the machine's busy time outside them (kernel, other
        processes), and the busiest processes outside them are named."""
        elapsed = end["t"] - start["t"]
        names = ("dispatcher", "api", "audit+notifier", "receiver", "bench")
        cores = dict.fromkeys((*names, "postgres", "rabbitmq", "redis"), 0.0)
        named = {**start["groups"], **end["groups"]}
        by_comm = rb.CpuMeter.GROUPS_BY_COMM
        others = []
        for pid, (_, comm, seconds) in end["procs"].items():
            before = start["procs"].get(pid)
            used = max(0.0, seconds - (before[2] if before and before[1] == comm else 0.0))
            group = named.get(pid) or by_comm.get(comm)
            if group is not None:
                cores[group] += used / elapsed
            elif used / elapsed >= 0.01:
                others.append((round(used / elapsed, 2), f"{comm}[{pid}]"))
        busy = end["machine"][0] - start["machine"][0]
        total = end["machine"][1] - start["machine"][1]
        cores["machine"] = (os.cpu_count() or 1) * busy / total if total else 0.0
        cores["other"] = max(
            0.0, cores["machine"] - sum(v for k, v in cores.items() if k != "machine")
        )
        # Parts of "other" no process is charged with: interrupts (the loopback network's
        # softirqs) and time the hypervisor gave to another VM (steal).
        ticks = [b - a for a, b in zip(start["stat"], end["stat"], strict=True)]
        if total:
            cores["irq"] = (os.cpu_count() or 1) * (ticks[5] + ticks[6]) / total
            cores["steal"] = (os.cpu_count() or 1) * ticks[7] / total
        result: dict[str, Any] = {k: round(v, 2) for k, v in cores.items()}
        result["seconds"] = round(elapsed, 2)
        result["busiest_other_processes"] = [
            f"{n} {c}" for c, n in sorted(others, reverse=True)[:5]
        ]
        return result


class Replicas:
    """Dispatcher replicas (`python -m webhook_dispatcher`), each with its own health port and
    log file, started and stopped by the measurements."""

    def __init__(
        self, env: dict[str, str], log_dir: Path, workdir: Path, overrides: dict[str, str]
    ) -> None:
        self.env = env
        self.log_dir = log_dir
        self.workdir = workdir
        self.overrides = overrides  # --dispatcher-setting: for experiments; none by default
        self.procs: list[subprocess.Popen[bytes]] = []
        self.starts = 0

    def start(self, count: int) -> None:
        self.starts += 1
        for i in range(count):
            env = {**self.env, **self.overrides}
            env["WEBHOOK_DISPATCHER_HEALTH_PORT"] = str(REPLICA_PORTS[i])
            name = f"webhook_dispatcher-{self.starts}-{i + 1}.log"
            with open(self.log_dir / name, "wb") as log:
                self.procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "webhook_dispatcher"],
                        cwd=self.workdir,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def check_alive(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                raise RuntimeError(f"dispatcher replica {i + 1} exited with {proc.returncode}")

    def wait_listening(self, timeout: float = 60) -> list[tuple[float, float]]:
        """(monotonic time, CPU seconds) of each replica when its health port first accepted a
        connection. A replica opens that port once connected and set up, and starts consuming
        right after; /health/ready itself answers late once the event loop is busy."""
        found: dict[int, tuple[float, float]] = {}
        deadline = time.monotonic() + timeout
        while len(found) < len(self.procs):
            self.check_alive()
            for i, proc in enumerate(self.procs):
                if i not in found and rb.port_in_use(REPLICA_PORTS[i]):
                    found[i] = (time.monotonic(), cpu_seconds(proc.pid))
            if time.monotonic() > deadline:
                raise RuntimeError(f"dispatcher replicas not listening after {timeout:.0f} s")
            time.sleep(0.005)
        return [found[i] for i in range(len(self.procs))]

    def wait_ready(self, timeout: float = 60) -> None:
        self.wait_listening(timeout)
        for port in REPLICA_PORTS[: len(self.procs)]:
            url = f"http://{HOST}:{port}/health/ready"
            while rb.http("GET", url, timeout=5)[0] != 200:
                self.check_alive()
                time.sleep(0.05)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []


class Profiler:
    """py-spy recording one process into a file of collapsed stacks until stopped."""

    def __init__(self, py_spy: str, pid: int, out: Path) -> None:
        self.out = out
        cmd = [py_spy, "record", "--pid", str(pid), "--rate", "250", "--format", "raw"]
        self.proc = subprocess.Popen(
            [*cmd, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def stop(self) -> dict[str, Any] | None:
        self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        try:
            _, err = self.proc.communicate(timeout=30)
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


PROJECT = ("webhook_dispatcher", "shared")
# Standard-library plumbing whose time belongs to whoever called it (a socket write is
# charged to asyncpg when asyncpg sent the query).
GLUE = frozenset({"asyncio", "selectors", "socket", "contextlib", "functools", "_weakrefset"})
LIBRARY_OF = {"aiormq": "aio_pika/aiormq/pamqp", "pamqp": "aio_pika/aiormq/pamqp"}
LIBRARY_OF["aio_pika"] = LIBRARY_OF["aiormq"]


def summarise_profile(path: Path, top: int = 20) -> dict[str, Any]:
    """Shares of the on-CPU samples of one process:
    - `self`: the function the sample was taken in;
    - `libraries`: the package of that function, charging standard-library plumbing (asyncio,
      sockets) to the nearest caller outside it, e.g. asyncpg for a query's socket write;
    - `steps`: the innermost dispatcher/shared function on the stack (inclusive of everything it
      called); a sample with none was a callback the event loop ran directly (a protocol's
      data_received, a pool release), named by its first frame;
    - `project_inclusive`: dispatcher/shared functions anywhere on the stack."""
    own: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        own[frame_key(frames[-1])] += n
        loop = max(
            (i for i, f in enumerate(frames) if f.startswith("_run_once (asyncio/")), default=-1
        )
        work = frames[loop + 1 :]
        # The loop's own frames (_run, the handle it runs) are skipped to find the callback.
        work = work[1:] if work and work[0].startswith("_run (asyncio/events.py") else work
        owner = next((package_of(f) for f in reversed(work) if package_of(f) not in GLUE), None)
        libraries[LIBRARY_OF.get(owner or "", owner or "asyncio event loop itself")] += n
        mine = [f for f in work if package_of(f) in PROJECT]
        if mine:
            steps[frame_key(mine[-1])] += n
        else:
            steps["loop callback: " + (frame_key(work[0]) if work else "event loop itself")] += n
        for key in {frame_key(f) for f in mine}:
            inclusive[key] += n

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": k, "samples": v, "percent": round(100 * v / total, 1)}
            for k, v in counter.most_common(top)
        ]

    return {
        "file": str(path.relative_to(rb.ROOT)) if path.is_relative_to(rb.ROOT) else str(path),
        "samples": total,
        "self": share(own),
        "libraries": share(libraries),
        "steps": share(steps),
        "project_inclusive": share(inclusive),
    }


def print_profile(label: str, summary: dict[str, Any], top: int = 15) -> None:
    print(f"py-spy, dispatcher, {label}: {summary['samples']} on-CPU samples ({summary['file']})")
    titles = (
        ("self", "where the samples were taken (self)"),
        ("libraries", "by library, asyncio/socket plumbing charged to its caller"),
        ("steps", "innermost dispatcher/shared function (or loop callback)"),
        ("project_inclusive", "dispatcher/shared functions, inclusive"),
    )
    for key, title in titles:
        print(f"  {title}:")
        for row in summary[key][:top]:
            print(f"    {row['percent']:5.1f}%  {row['function']}")
    print()


# --------------------------------------------------------------------------- broker and database


async def publish_failed(settings: Settings, owner_id: uuid.UUID, count: int) -> list[str]:
    """Publish `count` `2fa.failed` events of the owner to the events exchange, confirmed."""
    events = [
        Event.build(
            EventType.TWOFA_FAILED,
            TwoFactorFailedData(
                userId=f"load-{i:06d}", method="totp", reason="invalid_code", attemptsRemaining=4
            ),
            ownerId=owner_id,
            userId=f"load-{i:06d}",
            actor=Actor(kind="apiKey", id="webhooks-bench"),
        )
        for i in range(count)
    ]
    async with broker.connect(settings, "webhooks-bench") as connection:
        publisher = broker.Publisher(connection, broker.Topology(rb.BROKER_PREFIX))
        await publisher.ping()  # declares the topology
        channel = await connection.channel()
        queue = await channel.declare_queue(QUEUE, passive=True)
        await queue.purge()  # only the events the API published while setting up
        for i in range(0, count, 500):
            chunk = events[i : i + 500]
            await asyncio.gather(
                *(publisher.publish(str(e.id), e.type.value, e.to_bytes()) for e in chunk)
            )
    return [str(e.id) for e in events]


def dispatcher_queues(settings: Settings) -> list[str]:
    jobs = f"{QUEUE}.jobs"
    return [QUEUE, jobs, broker.delay_queue(jobs, settings.WEBHOOK_DEFER_SECONDS)]


def wait_queues(settings: Settings, want: dict[str, int], limit: float = 300) -> float:
    """Wait until each queue holds `want` messages (0: drained; n: at least n)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        depths = asyncio.run(rb.queue_depths(settings, list(want)))
        if all((depths[q] >= n) if n else depths[q] == 0 for q, n in want.items()):
            break
        time.sleep(0.5)
    return round(time.monotonic() - started, 1)


LOG_SQL = """
SELECT
    (SELECT count(*) FROM webhook_deliveries WHERE event_id = ANY($1::uuid[])) AS deliveries,
    (SELECT count(*) FROM webhook_deliveries
     WHERE event_id = ANY($1::uuid[]) AND status = 'succeeded') AS succeeded,
    (SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
     WHERE d.event_id = ANY($1::uuid[])) AS attempts,
    (SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
     WHERE d.event_id = ANY($1::uuid[]) AND a.status = 'succeeded') AS attempts_succeeded
"""
# From a delivery's row (its event consumed) to its first attempt's log row (the answer
# received): a delivery put back because its endpoint was saturated waits at least
# WEBHOOK_DEFER_SECONDS in the delay queue, so a gap that long means it was deferred.
GAP_SQL = """
WITH g AS (
    SELECT extract(epoch FROM min(a.created_at) - d.created_at) AS s
    FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.id
    WHERE d.event_id = ANY($1::uuid[])
    GROUP BY d.id
)
SELECT count(*) FILTER (WHERE s >= $2) AS deferred,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY s) AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY s) AS p99,
       max(s) AS max
FROM g
"""


async def delivery_log(settings: Settings, ids: list[str]) -> dict[str, Any]:
    conn = await asyncpg.connect(settings.DATABASE_URL)
    try:
        counts = dict(await conn.fetchrow(LOG_SQL, ids))
        gap = await conn.fetchrow(GAP_SQL, ids, float(settings.WEBHOOK_DEFER_SECONDS))
    finally:
        await conn.close()
    counts["deferred"] = gap["deferred"]
    counts["row_to_attempt_seconds"] = {
        k: round(float(gap[k] or 0), 3) for k in ("p50", "p99", "max")
    }
    return counts


# Where an event of the latency run spent its time, on the database's clock: waiting in the
# outbox until the relay's transaction took it (sent_at is that transaction's start, before the
# publish); being published, queued in RabbitMQ and taken by the dispatcher until its delivery
# row was written; the attempt, until its log row was written (after the receiver answered).
STAGES_SQL = """
WITH s AS (
    SELECT 1000 * extract(epoch FROM o.sent_at - o.created_at) AS outbox,
           1000 * extract(epoch FROM d.created_at - o.sent_at) AS broker,
           1000 * extract(epoch FROM a.created_at - d.created_at) AS attempt
    FROM outbox o
    JOIN webhook_deliveries d ON d.event_id = o.id
    JOIN webhook_attempts a ON a.delivery_id = d.id AND a.attempt = 1
    WHERE o.type = '2fa.failed' AND o.created_at BETWEEN $1 AND $2
)
SELECT count(*) AS n,
       count(*) FILTER (WHERE attempt >= 1000 * $3) AS deferred,
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY outbox) AS outbox,
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY broker) AS broker,
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY attempt) AS attempt,
       max(outbox) AS outbox_max, max(broker) AS broker_max, max(attempt) AS attempt_max
FROM s
"""


# The relay's transactions that took the run's rows: each sets one sent_at (its start) on the
# rows of its batch, so this is one row per relay cycle.
CYCLES_SQL = """
SELECT sent_at, count(*) AS rows FROM outbox
WHERE created_at BETWEEN $1 AND $2 AND sent_at IS NOT NULL
GROUP BY sent_at ORDER BY sent_at
"""


async def stages(settings: Settings, since: datetime, until: datetime) -> dict[str, Any]:
    conn = await asyncpg.connect(settings.DATABASE_URL)
    try:
        defer = float(settings.WEBHOOK_DEFER_SECONDS)
        row = await conn.fetchrow(STAGES_SQL, since, until, defer)
        cycles = await conn.fetch(CYCLES_SQL, since, until)
    finally:
        await conn.close()
    gaps = [
        1000 * (b["sent_at"] - a["sent_at"]).total_seconds() for a, b in itertools.pairwise(cycles)
    ]
    batches = [c["rows"] for c in cycles]
    result: dict[str, Any] = {
        "events": row["n"],
        # put back for a saturated endpoint (see the throughput runs' "deferred")
        "deferred": row["deferred"],
        "relay_cycles": {
            "count": len(cycles),
            "rows_per_cycle": percentiles([float(b) for b in batches]),
            "ms_between_cycle_starts": percentiles(gaps),
        },
    }
    for stage in ("outbox", "broker", "attempt"):
        p50, p99 = row[stage] or (None, None)
        top = row[f"{stage}_max"]
        result[stage] = {
            k: round(float(v), 1) if v is not None else None
            for k, v in (("p50", p50), ("p99", p99), ("max", top))
        }
    return result


def wait_attempts(settings: Settings, ids: list[str], limit: float = 30) -> dict[str, Any]:
    """The delivery log once it has one attempt per event, or as it is after `limit` s."""
    started = time.monotonic()
    while True:
        log = asyncio.run(delivery_log(settings, ids))
        if log["attempts"] >= len(ids) or time.monotonic() - started > limit:
            return log
        time.sleep(0.5)


# --------------------------------------------------------------------------- measurements


class Bench:
    """The running system and what every measurement needs."""

    def __init__(self, args: argparse.Namespace, env: dict[str, str], log_dir: Path) -> None:
        self.args = args
        self.env = env
        self.settings = rb.settings_of(env)
        self.log_dir = log_dir
        self.base = f"http://{HOST}:{rb.API_PORT}"
        self.system = rb.System(env, log_dir, BASE_SERVICES)
        self.replicas = Replicas(env, log_dir, self.system.workdir, args.dispatcher_settings)
        self.receiver: Receiver | None = None
        self.meter: Meter | None = None
        self.owner_id = uuid.UUID(int=0)
        self.account: dict[str, str] = {}
        self.profiles: dict[str, Any] = {}

    def start(self) -> None:
        self.receiver = Receiver(self.log_dir)
        self.system.start()
        self.system.wait_ready()
        self.meter = Meter(self.system, self.receiver, self.replicas)
        self.account = rb.setup_account(self.base)
        token = rb.access_token(self.base, self.account)
        auth = {"Authorization": f"Bearer {token}"}
        status, body = rb.http("GET", f"{self.base}/api/auth/me", headers=auth)
        if status != 200:
            raise RuntimeError(f"/api/auth/me: {status} {body}")
        self.owner_id = uuid.UUID(body["data"]["id"])
        hook = {"url": f"{self.receiver.url}{HOOK_PATH}", "events": [EventType.TWOFA_FAILED.value]}
        status, body = rb.http("POST", f"{self.base}/api/webhooks", hook, headers=auth)
        if status != 201:
            raise RuntimeError(f"webhook creation failed: {status} {body}")

    def stop(self) -> None:
        self.replicas.stop()
        if self.receiver is not None:
            self.receiver.stop()
        self.system.stop()

    def profiler(self, name: str) -> Profiler | None:
        if not self.args.profile:
            return None
        out = self.args.profile_dir / f"dispatcher-{name}.txt"
        return Profiler(self.args.py_spy, self.replicas.pids()[0], out)

    def finish_profile(self, name: str, profiler: Profiler | None) -> None:
        if profiler is not None and (summary := profiler.stop()) is not None:
            self.profiles[name] = summary

    # ----- 1. the receiver alone

    def calibrate_receiver(self, seconds: int = 5, connections: int = 32) -> dict[str, Any]:
        """wrk posting webhook-sized requests at the receiver: what it can take."""
        assert self.receiver is not None and self.meter is not None
        body = json.dumps(
            {
                "id": str(uuid.uuid4()),
                "event": "2fa.failed",
                "timestamp": "2026-01-01T00:00:00.000Z",
                "data": {"userId": "load-000000", "method": "totp", "reason": "invalid_code"},
            }
        )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "2fa-service-webhooks/1",
            "X-Webhook-Event": "2fa.failed",
            "X-Webhook-Id": str(uuid.uuid4()),
            "X-Webhook-Timestamp": "1767225600",
            "X-Webhook-Signature": "0" * 64,
            "webhook-id": str(uuid.uuid4()),
            "webhook-timestamp": "1767225600",
            "webhook-signature": "v1," + "A" * 44,
        }
        script = "wrk.method = 'POST'\nwrk.body = " + json.dumps(body) + "\n"
        script += "".join(
            f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in headers.items()
        )
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(script)
        try:
            self.receiver.reset(keep_bodies=False)
            before = self.meter.snapshot()
            out = subprocess.run(
                [
                    "wrk",
                    "-t1",
                    f"-c{connections}",
                    f"-d{seconds}s",
                    "--latency",
                    "-s",
                    f.name,
                    f"{self.receiver.url}{HOOK_PATH}",
                ],
                check=False,
                capture_output=True,
                text=True,
                timeout=seconds + 60,
            )
            cpu = self.meter.usage(before, self.meter.snapshot())
        finally:
            os.unlink(f.name)
        counted = self.receiver.stats()["requests"]
        rate = counted / seconds
        receiver_cores = cpu["receiver"]
        result = {
            "connections": connections,
            "seconds": seconds,
            "requests": counted,
            "requests_per_second": round(rate),
            "receiver_cores": receiver_cores,
            "capacity_per_core": round(rate / receiver_cores) if receiver_cores else None,
            "wrk_output": out.stdout,
        }
        self.receiver.reset(keep_bodies=False)
        return result

    # ----- 2. throughput

    def throughput(self, replicas: int, count: int, label: str) -> dict[str, Any]:
        """Publish `count` events with no dispatcher running, start `replicas`, and time the
        deliveries; then check the receiver and the delivery log."""
        assert self.receiver is not None and self.meter is not None
        settings = self.settings
        self.receiver.reset(keep_bodies=False)
        publishing = time.monotonic()
        ids = asyncio.run(publish_failed(settings, self.owner_id, count))
        published = time.monotonic() - publishing
        waited = wait_queues(settings, {AUDIT_QUEUE: 0, QUEUE: count})
        print(
            f"  {label}: {count} events published in {published:.1f} s "
            f"({count / published:.0f}/s); audit drained its copy {waited} s later; "
            f"starting {replicas} replica(s)",
            flush=True,
        )
        self.replicas.start(replicas)
        started = self.replicas.wait_listening()
        at_all_started = self.receiver.stats()["distinct"]  # before the last replica consumed
        before = self.meter.snapshot()
        profiler = self.profiler(label) if label != "warm-up" else None
        last, last_change, stalled = -1, time.monotonic(), False
        while True:
            stats = self.receiver.stats()
            if stats["distinct"] >= count:
                break
            if stats["distinct"] != last:
                last, last_change = stats["distinct"], time.monotonic()
            elif time.monotonic() - last_change > STALL_SECONDS:
                stalled = True
                break
            self.replicas.check_alive()
            time.sleep(0.05)
        after = self.meter.snapshot()
        done_cpu = [cpu_seconds(pid) for pid in self.replicas.pids()]
        if profiler is not None:
            self.finish_profile(label, profiler)
        log = wait_attempts(settings, ids)
        drained = wait_queues(settings, dict.fromkeys(dispatcher_queues(settings), 0), limit=30)
        # Started for this run: their peaks since they started are this run's.
        peak = PeakRss({"webhook_dispatcher": self.replicas.pids()}).stop()
        self.replicas.stop()
        final = self.receiver.dump()
        published_ids = set(ids)
        seen = final["ids"]
        first, last_new = final["first"], final["last_new"]
        seconds = (last_new - first) if first and last_new else float("nan")
        from_start = (last_new - min(t for t, _ in started)) if last_new else float("nan")
        all_running = (last_new - max(t for t, _ in started)) if last_new else float("nan")
        cpu = self.meter.usage(before, after)
        rate = (len(seen) / seconds) if seconds else 0.0
        per_replica_cpu = [
            round((done - cpu) / (after["t"] - t), 2)
            for (t, cpu), done in zip(started, done_cpu, strict=True)
        ]
        result = {
            "label": label,
            "replicas": replicas,
            "events": count,
            "stalled": stalled,
            "seconds": round(seconds, 2),
            "deliveries_per_second": round(len(seen) / seconds, 1) if seconds else 0,
            "seconds_from_start": round(from_start, 2),
            "deliveries_per_second_from_start": round(len(seen) / from_start, 1)
            if from_start
            else 0,
            "replica_start_skew_seconds": round(
                max(t for t, _ in started) - min(t for t, _ in started), 3
            ),
            # Over the time every replica was consuming (replicas start a little apart).
            "deliveries_per_second_all_running": round(
                (len(seen) - at_all_started) / all_running, 1
            )
            if all_running
            else 0,
            "first_arrival_after_start_ms": round(1000 * (first - min(t for t, _ in started)), 1)
            if first
            else None,
            "receiver": {
                "requests": final["requests"],
                "distinct": len(seen),
                "missing": len(published_ids - set(seen)),
                "duplicates": sum(n - 1 for n in seen.values() if n > 1),
                "unknown_ids": len(set(seen) - published_ids),
            },
            "delivery_log": log,
            "queues_drained_after_seconds": drained,
            "dispatcher_cores_per_replica": per_replica_cpu,
            "cpu_cores": cpu,
            "peak_rss_mb": peak["mb"],
            "cpu_ms_per_delivery": {
                g: round(1000 * cpu[g] / rate, 3) if rate else None
                for g in ("dispatcher", "postgres", "rabbitmq", "receiver", "machine")
            },
        }
        return result

    # ----- 3. latency

    def latency(self) -> dict[str, Any]:
        args = self.args
        assert self.receiver is not None and self.meter is not None
        total = round(args.rate * (args.latency_warmup + args.latency_seconds))
        users = math.ceil(total / args.attempts_per_user)
        verify = rb.Verify(self.base, users, 0, args.enrol_concurrency)
        try:
            verify.create_key(rb.access_token(self.base, self.account))
            print(
                f"  enrolling {users} end users with TOTP ({args.enrol_concurrency} at a time) ...",
                flush=True,
            )
            enrolment = verify.enrol()
            print(f"    enrolled in {enrolment['seconds']} s", flush=True)
            secrets_by_user = verify.pools["small"].secrets
            api_key = verify.api_key
        finally:
            verify.close()
        now = rb.step_at(time.time())
        names = list(secrets_by_user)
        codes = {u: rb.wrong_code(s, now) for u, s in secrets_by_user.items()}
        # Request k goes to user k mod users: a user's attempts are users/rate seconds apart.
        plan = [(names[k % users], codes[names[k % users]]) for k in range(total)]
        warm = round(args.rate * args.latency_warmup)
        self.replicas.start(1)
        self.replicas.wait_ready()
        rss = PeakRss({**self.system.trees(), "webhook_dispatcher": self.replicas.pids()})
        # The enrolment's events (2fa.enabled, ...) waited in the queues while no dispatcher ran:
        # the measurement starts once every consumer has caught up.
        drain = [AUDIT_QUEUE, NOTIFIER_QUEUE, *dispatcher_queues(self.settings)]
        waited = wait_queues(self.settings, dict.fromkeys(drain, 0))
        print(f"    the consumers caught up with the enrolment's events in {waited} s", flush=True)
        time.sleep(1)
        self.receiver.reset(keep_bodies=True)
        print(
            f"  sending {total} wrong codes at {args.rate}/s open-loop ({args.latency_warmup} s "
            f"warm-up + {args.latency_seconds} s measured), 1 replica ...",
            flush=True,
        )
        profiler = None
        meter = self.meter

        def window_start() -> dict[str, Any]:
            nonlocal profiler
            profiler = self.profiler("latency")
            rss.start()
            return meter.snapshot()

        async def run() -> tuple[list[dict[str, Any]], Any, list[dict[str, Any]]]:
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch_backlog(self.settings, stop))
            try:
                sends, windows = await open_loop(
                    self.base, api_key, plan, args.rate, warm, window_start, meter.snapshot
                )
            finally:
                stop.set()
            return sends, windows, await watcher

        sends, windows, backlog = asyncio.run(run())
        cpu = meter.usage(*windows)
        expected = sum(1 for s in sends if s["status"] == 401)
        last, last_change = -1, time.monotonic()
        while True:
            stats = self.receiver.stats()
            if stats["requests"] >= expected or time.monotonic() - last_change > 15:
                break
            if stats["requests"] != last:
                last, last_change = stats["requests"], time.monotonic()
            time.sleep(0.1)
        self.finish_profile("latency", profiler)
        final = self.receiver.dump()
        peak = rss.stop()
        self.replicas.stop()
        wall = time.time() - time.monotonic()  # the DB's timestamps are wall-clock
        since = datetime.fromtimestamp(wall + sends[warm]["sent"], UTC)
        until = datetime.fromtimestamp(wall + sends[-1]["answered"], UTC)
        by_stage = asyncio.run(stages(self.settings, since, until))
        return {
            "rate": args.rate,
            "warmup_seconds": args.latency_warmup,
            "seconds": args.latency_seconds,
            "users": users,
            "attempts_per_user": args.attempts_per_user,
            "enrolment": enrolment,
            **match(sends, final["arrivals"], warm),
            "stages_ms": by_stage,
            "backlog": backlog_summary(backlog, sends[0]["sent"], sends[warm]["sent"]),
            "cpu_cores": cpu,
            "peak_rss_mb": peak["mb"],
        }


async def watch_backlog(settings: Settings, stop: asyncio.Event) -> list[dict[str, Any]]:
    """Every 0.5 s until `stop`: the outbox rows not taken by the relay yet, and the messages
    waiting in the dispatcher's queue (not counting the up to WEBHOOK_MAX_IN_FLIGHT it holds)."""
    samples: list[dict[str, Any]] = []
    conn = await asyncpg.connect(settings.DATABASE_URL)
    connection = await aio_pika.connect(settings.RABBITMQ_URL, timeout=5)
    try:
        channel = await connection.channel()
        while not stop.is_set():
            t = time.monotonic()
            unsent = await conn.fetchval(rb.UNSENT_SQL)
            queue = await channel.declare_queue(QUEUE, passive=True)
            waiting = queue.declaration_result.message_count or 0
            samples.append({"t": t, "outbox_unsent": unsent, "dispatcher_queue": waiting})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        await connection.close()
        await conn.close()
    return samples


def backlog_summary(samples: list[dict[str, Any]], first: float, measured: float) -> dict[str, Any]:
    """The largest backlogs, and one sample per second (seconds from the measured run's start;
    negative: the warm-up)."""
    if not samples:
        return {}
    per_second: dict[int, dict[str, Any]] = {}
    for sample in samples:
        if sample["t"] >= first:
            per_second.setdefault(math.floor(sample["t"] - measured), sample)
    return {
        "outbox_unsent_max": max(x["outbox_unsent"] for x in samples),
        "dispatcher_queue_max": max(x["dispatcher_queue"] for x in samples),
        "by_second": [
            {
                "second": k,
                "outbox_unsent": v["outbox_unsent"],
                "dispatcher_queue": v["dispatcher_queue"],
            }
            for k, v in sorted(per_second.items())
        ],
    }


async def open_loop(
    base: str,
    api_key: str,
    plan: list[tuple[str, str]],
    rate: float,
    warm: int,
    window_start: Any,
    snapshot: Any,
) -> tuple[list[dict[str, Any]], tuple[dict[str, Any], dict[str, Any]]]:
    """Send plan[k] at start + k/rate, whatever the earlier requests are doing."""
    sends: list[dict[str, Any]] = [{} for _ in plan]
    headers = {"X-API-Key": api_key}
    url = f"{base}/api/2fa/verify"
    connector = aiohttp.TCPConnector(limit=0)  # open loop: as many connections as it takes
    timeout = aiohttp.ClientTimeout(total=60)

    async def one(session: aiohttp.ClientSession, k: int, due: float) -> None:
        user, code = plan[k]
        sent = time.monotonic()
        record: dict[str, Any] = {"user": user, "due": due, "sent": sent, "status": 0}
        try:
            async with session.post(url, json={"userId": user, "code": code}, headers=headers) as r:
                record["status"] = r.status
                body = await r.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            record["error"] = repr(exc)
            body = None
        record["answered"] = time.monotonic()
        if isinstance(body, dict):
            record["left"] = ((body.get("error") or {}).get("details") or {}).get(
                "attemptsRemaining"
            )
        sends[k] = record

    # Snapshots are taken in a thread: reading /proc takes long enough to delay the sends.
    windows: list[asyncio.Task[dict[str, Any]]] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        tasks = []
        start = time.monotonic() + 0.2
        for k in range(len(plan)):
            if k == warm:
                windows.append(asyncio.create_task(asyncio.to_thread(window_start)))
            due = start + k / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(session, k, due)))
        windows.append(asyncio.create_task(asyncio.to_thread(snapshot)))
        await asyncio.gather(*tasks)
    return sends, (await windows[0], await windows[1])


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)], 1)

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": round(ordered[-1], 1),
        "count": len(ordered),
    }


def match(sends: list[dict[str, Any]], arrivals: list[list[Any]], warm: int) -> dict[str, Any]:
    """Latencies of the measured requests: each 401 matched with the delivery of the same
    (userId, attemptsRemaining)."""
    arrived: dict[tuple[Any, Any], float] = {}  # (userId, attemptsRemaining) -> arrival
    duplicates = 0
    for now, _, user, left in arrivals:
        if (user, left) in arrived:
            duplicates += 1
        else:
            arrived[(user, left)] = now
    measured = sends[warm:]
    latencies, api_ms, after_answer, missing = [], [], [], 0
    for s in measured:
        if "answered" in s:
            api_ms.append(1000 * (s["answered"] - s["sent"]))
        if s["status"] != 401:
            continue
        t = arrived.get((s["user"], s.get("left")))
        if t is None:
            missing += 1
        else:
            latencies.append(1000 * (t - s["sent"]))
            after_answer.append(1000 * (t - s["answered"]))
    lateness = [1000 * (s["sent"] - s["due"]) for s in measured]
    # p50/max of each second since the first request (warm-up included, second < 0): does a
    # backlog build up?
    t0 = measured[0]["sent"] if measured else 0.0
    seconds: dict[int, list[float]] = {}
    for s in sends:
        t = arrived.get((s["user"], s.get("left")))
        if s["status"] == 401 and t is not None:
            seconds.setdefault(math.floor(s["sent"] - t0), []).append(1000 * (t - s["sent"]))
    by_second = [
        {"second": k, "p50": percentiles(v)["p50"], "max": percentiles(v)["max"]}
        for k, v in sorted(seconds.items())
    ]
    statuses = Counter(str(s["status"]) for s in measured)
    span = measured[-1]["sent"] - measured[0]["sent"] if len(measured) > 1 else 0
    return {
        "sent": len(measured),
        "send_rate": round((len(measured) - 1) / span, 1) if span else 0,
        "statuses": dict(statuses),
        "send_lateness_ms": {
            "p99": percentiles(lateness).get("p99"),
            "max": round(max(lateness), 1),
        },
        "api_response_ms": percentiles(api_ms),
        "end_to_end_ms": percentiles(latencies),
        # From the API's answer (the event committed to the outbox) to the arrival: the relay,
        # RabbitMQ and the dispatcher. Negative when the webhook beat the answer.
        "after_api_answer_ms": percentiles(after_answer),
        "by_second": by_second,
        "missing_arrivals": missing,
        "duplicate_arrivals": duplicates,
        "arrivals_total": len(arrivals),
    }


# --------------------------------------------------------------------------- output


def print_tables(report: dict[str, Any]) -> None:
    cores = os.cpu_count()
    cal = report.get("receiver_alone")
    print()
    if cal:
        print(
            f"Receiver alone (wrk, {cal['connections']} connections, {cal['seconds']} s): "
            f"{cal['requests_per_second']} requests/s at {cal['receiver_cores']} cores "
            f"(~{cal['capacity_per_core']} requests/s per core)"
        )
    runs = report.get("throughput", [])
    if runs:
        print()
        head = (
            f"{'throughput':<12} {'events':>7} {'deliv./s':>9} {'seconds':>8} {'/s, all up':>10} "
            f"{'distinct':>8} {'dupl.':>6} {'missing':>7} {'attempts':>8} {'deferred':>8} "
            f"{'disp. cores':>12}"
        )
        print(head)
        print("-" * len(head))
        for r in runs:
            rec, log = r["receiver"], r["delivery_log"]
            per = "+".join(f"{c:.2f}" for c in r["dispatcher_cores_per_replica"])
            print(
                f"{r['replicas']} replica{'s' if r['replicas'] > 1 else ' ':<4} {r['events']:>7} "
                f"{r['deliveries_per_second']:>9.0f} {r['seconds']:>8.2f} "
                f"{r['deliveries_per_second_all_running']:>10.0f} {rec['distinct']:>8} "
                f"{rec['duplicates']:>6} {rec['missing']:>7} {log['attempts']:>8} "
                f"{log['deferred']:>8} {per:>12}" + ("  STALLED" if r["stalled"] else "")
            )
        print(
            "(deliv./s: distinct deliveries / (last new arrival - first arrival); '/s, all up': "
            "over the time after the last replica started; distinct/dupl./missing: X-Webhook-Id "
            "counts at the receiver; attempts: webhook_attempts rows for these events; deferred: "
            "first attempt logged >= WEBHOOK_DEFER_SECONDS after the delivery row (put back for a "
            "saturated endpoint); disp. cores: CPU s / wall s of each replica; target "
            f"{TARGET_RATE}/s per replica)"
        )
    lat = report.get("latency")
    if lat:
        e2e, api = lat["end_to_end_ms"], lat["api_response_ms"]
        print()
        head = (
            f"{'latency':<26} {'sent':>6} {'401':>6} {'arrived':>7} {'missing':>7} {'p50 ms':>8} "
            f"{'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        )
        print(head)
        print("-" * len(head))
        label = f"{lat['rate']}/s, {lat['seconds']} s, 1 replica"
        print(
            f"{label:<26} {lat['sent']:>6} {lat['statuses'].get('401', 0):>6} "
            f"{e2e.get('count', 0):>7} {lat['missing_arrivals']:>7} {e2e.get('p50', 0):>8.1f} "
            f"{e2e.get('p90', 0):>8.1f} {e2e.get('p99', 0):>8.1f} {e2e.get('max', 0):>8.1f}"
        )
        after = lat["after_api_answer_ms"]
        for name, row in (("  API call -> its answer", api), ("  answer -> arrival", after)):
            print(
                f"{name:<26} {'':>6} {'':>6} {'':>7} {'':>7} {row.get('p50', 0):>8.1f} "
                f"{row.get('p90', 0):>8.1f} {row.get('p99', 0):>8.1f} {row.get('max', 0):>8.1f}"
            )
        st = lat["stages_ms"]
        for name, key in (
            ("  in the outbox", "outbox"),
            ("  publish+broker+consume", "broker"),
            ("  attempt, until logged", "attempt"),
        ):
            row = st[key]
            print(
                f"{name:<26} {'':>6} {'':>6} {st['events']:>7} {'':>7} {row['p50'] or 0:>8.1f} "
                f"{'':>8} {row['p99'] or 0:>8.1f} {row['max'] or 0:>8.1f}"
            )
        cyc = st["relay_cycles"]
        print(
            "(stages, on the database's clock: outbox row -> the relay's transaction took it "
            "(sent_at) -> delivery row written by the dispatcher -> first attempt logged, after "
            f"the receiver's answer. The outbox relay took these rows in {cyc['count']} "
            f"transactions: rows per transaction p50 {cyc['rows_per_cycle'].get('p50')}, max "
            f"{cyc['rows_per_cycle'].get('max')}; ms between their starts p50 "
            f"{cyc['ms_between_cycle_starts'].get('p50')}, p99 "
            f"{cyc['ms_between_cycle_starts'].get('p99')}, max "
            f"{cyc['ms_between_cycle_starts'].get('max')}. Deliveries whose attempt was logged "
            f">= WEBHOOK_DEFER_SECONDS after their row (deferred): {st['deferred']})"
        )
        print(
            f"(API call sent -> webhook arrived; measured send rate {lat['send_rate']}/s, sends "
            f"late by at most {lat['send_lateness_ms']['max']} ms; statuses {lat['statuses']}; "
            f"duplicate arrivals {lat['duplicate_arrivals']}; target p99 < {TARGET_P99_MS} ms)"
        )
        series = lat["by_second"]
        warm = " ".join(f"{row['p50']:.0f}" for row in series if row["second"] < 0)
        measured = " ".join(f"{row['p50']:.0f}" for row in series if row["second"] >= 0)
        print(f"(end-to-end p50 of each second, ms: warm-up {warm} | measured {measured})")
        backlog = lat.get("backlog") or {}
        if backlog:

            def series(key: str) -> str:
                rows = backlog["by_second"]
                before = " ".join(str(r[key]) for r in rows if r["second"] < 0)
                return before + " | " + " ".join(str(r[key]) for r in rows if r["second"] >= 0)

            print(
                f"(backlogs, one sample a second: outbox rows not yet taken by the relay (max "
                f"{backlog['outbox_unsent_max']}): {series('outbox_unsent')}; messages waiting in "
                f"the dispatcher's queue (max {backlog['dispatcher_queue_max']}): "
                f"{series('dispatcher_queue')})"
            )
    rows = [(f"throughput, {r['replicas']} replica(s)", r["cpu_cores"]) for r in runs]
    if lat:
        rows.append(("latency, 1 replica", lat["cpu_cores"]))
    if rows:
        groups = (
            "dispatcher",
            "api",
            "audit+notifier",
            "postgres",
            "rabbitmq",
            "redis",
            "receiver",
            "bench",
            "other",
            "machine",
        )
        narrow = {"audit+notifier": "audit+notif"}
        print()
        head = f"{'CPU, cores used':<26} " + " ".join(f"{narrow.get(g, g):>11}" for g in groups)
        head += f" {'(irq':>6} {'steal)':>6}"
        print(head)
        print("-" * len(head))
        for label, cpu in rows:
            print(
                f"{label:<26} "
                + " ".join(f"{cpu[g]:>11.2f}" for g in groups)
                + f" {cpu.get('irq', 0):>6.2f} {cpu.get('steal', 0):>6.2f}"
            )
        print(
            f"(cores: 1.00 = one core busy for the whole run; this machine has {cores}. bench = "
            "this script (the latency run's sender); other = machine - the named groups, of which "
            "irq = interrupts and softirqs (the loopback network) and steal = taken by the "
            "hypervisor)"
        )
    print()


def elsewhere(cpu: dict[str, Any]) -> str:
    return ", ".join(cpu["busiest_other_processes"]) or "short-lived processes or the kernel"


def warn_disturbed(cpu: dict[str, Any]) -> None:
    """run_bench.warn_disturbed for this script's own CPU meter (its busiest processes are
    already strings)."""
    if cpu["other"] > 0.2:
        print(
            f"    warning: {cpu['other']} cores went elsewhere ({elsewhere(cpu)}); this run's "
            "figures are disturbed",
            flush=True,
        )



# --------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve-receiver", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--events", type=int, default=20000, help="events per throughput run (default 20000)"
    )
    parser.add_argument(
        "--warmup-events",
        type=int,
        default=2000,
        help="events of the unreported warm-up run, 1 replica (default 2000; 0: none)",
    )
    parser.add_argument(
        "--replicas",
        default="1,2",
        help="replica counts of the throughput runs, comma-separated (default 1,2; at most 2)",
    )
    parser.add_argument(
        "--rate", type=float, default=200, help="latency run: API calls per second (default 200)"
    )
    parser.add_argument(
        "--latency-seconds", type=int, default=20, help="latency run: measured seconds (default 20)"
    )
    parser.add_argument(
        "--latency-warmup",
        type=int,
        default=3,
        help="latency run: seconds at the same rate before the measured ones (default 3)",
    )
    parser.add_argument(
        "--attempts-per-user",
        type=int,
        default=4,
        help="latency run: wrong codes per end user, at most 4 (5 locks a user; default 4)",
    )
    parser.add_argument(
        "--enrol-concurrency",
        type=int,
        default=64,
        help="end users enrolled at a time (default 64)",
    )
    parser.add_argument(
        "--api-workers", type=int, default=1, help="API_WORKERS of the API (default 1)"
    )
    parser.add_argument(
        "--dispatcher-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the dispatcher replicas only, e.g. WEBHOOK_ENDPOINT_CONCURRENCY=64 "
        "(repeatable; for experiments: the default run uses the default settings)",
    )
    parser.add_argument(
        "--only",
        choices=("throughput", "latency"),
        help="run only the throughput runs or only the latency run",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="sample the first dispatcher replica with py-spy during the measured runs "
        "(their figures are then a little low)",
    )
    parser.add_argument(
        "--out", type=Path, help="write the JSON here (default bench/results/webhooks-<time>.json)"
    )
    args = parser.parse_args()
    if args.serve_receiver:
        asyncio.run(serve_receiver(args.serve_receiver))
        return 0
    replica_counts = [int(n) for n in args.replicas.split(",") if n.strip()]
    args.dispatcher_settings = {}
    for item in args.dispatcher_setting:
        name, eq, value = item.partition("=")
        if not eq or name not in Settings.model_fields:
            parser.error(f"--dispatcher-setting {item!r}: NAME=VALUE with a setting's name")
        args.dispatcher_settings[name] = value
    if any(n not in (1, 2) for n in replica_counts):
        parser.error("--replicas: 1 and/or 2")
    if not 1 <= args.attempts_per_user <= 4:
        parser.error("--attempts-per-user: 1 to 4")
    args.py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if args.profile and not os.access(args.py_spy, os.X_OK):
        print("--profile needs py-spy: .venv/bin/pip install py-spy", file=sys.stderr)
        return 1
    if shutil.which("wrk") is None:
        print("wrk is not installed (bench/webhooks.sh installs it)", file=sys.stderr)
        return 1
    ports = [rb.API_PORT, 3102, 3103, 3104, RECEIVER_PORT, SECOND_REPLICA_PORT]
    busy = [p for p in ports if rb.port_in_use(p)]
    if busy:
        print(
            f"port(s) {', '.join(map(str, busy))} on {HOST} already in use; "
            "is another benchmark running?",
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
    env = rb.service_env()
    env.update(WEBHOOK_ALLOW_PRIVATE_URLS="true", API_WORKERS=str(args.api_workers))
    settings = rb.settings_of(env)
    dispatcher = rb.settings_of({**env, **args.dispatcher_settings})  # also validates them
    configure_logging(settings, "bench")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    rb.RESULTS.mkdir(parents=True, exist_ok=True)
    log_dir = rb.RESULTS / f"webhooks-logs-{stamp}"
    log_dir.mkdir(parents=True)
    args.profile_dir = rb.RESULTS / f"webhooks-profile-{stamp}"
    if args.profile:
        args.profile_dir.mkdir(parents=True)

    def on_term(signum: int, _: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    bench = Bench(args, env, log_dir)
    report: dict[str, Any] = {}
    try:
        asyncio.run(rb.cleanup_resources(settings))  # leftovers of an interrupted run
        applied = asyncio.run(prepare(settings))
        print(
            f"database {rb.DATABASE}: {len(applied)} migration(s) applied; starting the receiver "
            f"on :{RECEIVER_PORT}, api (API_WORKERS={args.api_workers}) on :{rb.API_PORT}, "
            f"notifier and audit (logs in {log_dir.relative_to(rb.ROOT)})",
            flush=True,
        )
        print(
            f"dispatcher settings: WEBHOOK_MAX_IN_FLIGHT={dispatcher.WEBHOOK_MAX_IN_FLIGHT}, "
            f"WEBHOOK_ENDPOINT_CONCURRENCY={dispatcher.WEBHOOK_ENDPOINT_CONCURRENCY}, "
            f"DB_POOL_MAX={dispatcher.DB_POOL_MAX}"
            + (f" (overridden: {args.dispatcher_settings})" if args.dispatcher_settings else ""),
            flush=True,
        )
        bench.start()
        assert bench.meter is not None
        idle_before = bench.meter.snapshot()
        time.sleep(2)
        idle = bench.meter.usage(idle_before, bench.meter.snapshot())
        report["idle_cpu_cores"] = idle
        print(f"machine CPU while the system idles: {idle['machine']} cores", flush=True)
        if idle["machine"] > 0.2:
            print(
                f"  warning: the CPU is busy elsewhere ({elsewhere(idle)}); figures will be "
                "lower and noisier",
                flush=True,
            )

        print("receiver alone (wrk) ...", flush=True)
        cal = bench.calibrate_receiver()
        report["receiver_alone"] = cal
        print(
            f"  {cal['requests_per_second']} requests/s, receiver at {cal['receiver_cores']} cores",
            flush=True,
        )
        if args.only != "latency":
            runs = []
            if args.warmup_events:
                report["throughput_warmup"] = bench.throughput(1, args.warmup_events, "warm-up")
            for n in replica_counts:
                run = bench.throughput(n, args.events, f"{n}-replica")
                rec = run["receiver"]
                print(
                    f"    {run['deliveries_per_second']:.0f} deliveries/s over {run['seconds']} s "
                    f"({run['deliveries_per_second_all_running']:.0f}/s with all replicas up); "
                    f"received {rec['distinct']} distinct, {rec['duplicates']} duplicate(s), "
                    f"{rec['missing']} missing; {run['delivery_log']['attempts']} attempt rows; "
                    f"dispatcher CPU {run['dispatcher_cores_per_replica']} cores; machine "
                    f"{run['cpu_cores']['machine']}; CPU ms per delivery "
                    f"{run['cpu_ms_per_delivery']}",
                    flush=True,
                )
                warn_disturbed(run["cpu_cores"])
                runs.append(run)
            report["throughput"] = runs
        if args.only != "throughput":
            print("latency ...", flush=True)
            report["latency"] = bench.latency()
            e2e = report["latency"]["end_to_end_ms"]
            print(
                f"    end to end p50 {e2e.get('p50')} ms, p99 {e2e.get('p99')} ms, max "
                f"{e2e.get('max')} ms over {e2e.get('count')} deliveries",
                flush=True,
            )
            warn_disturbed(report["latency"]["cpu_cores"])
    except KeyboardInterrupt:
        print("interrupted; stopping", file=sys.stderr)
        return 130
    finally:
        bench.stop()
        asyncio.run(rb.cleanup_resources(settings))

    print_tables(report)
    for name, summary in bench.profiles.items():
        print_profile(name, summary)
    if bench.profiles:
        print(
            "(py-spy counts a thread that is running or runnable, so a socket write includes "
            "waiting for a CPU on this busy machine)\n"
        )
    report = {
        "started_utc": stamp,
        "command": " ".join(["bash bench/webhooks.sh", *sys.argv[1:]]),
        "source": source,
        "machine": rb.machine(),
        "settings": {
            "api_workers": settings.API_WORKERS,
            "log_level": settings.LOG_LEVEL,
            "webhook_allow_private_urls": settings.WEBHOOK_ALLOW_PRIVATE_URLS,
            "webhook_max_in_flight": dispatcher.WEBHOOK_MAX_IN_FLIGHT,
            "webhook_endpoint_concurrency": dispatcher.WEBHOOK_ENDPOINT_CONCURRENCY,
            "webhook_defer_seconds": dispatcher.WEBHOOK_DEFER_SECONDS,
            "dispatcher_db_pool_max": dispatcher.DB_POOL_MAX,
            "twofa_max_failures": settings.TWOFA_MAX_FAILURES,
            "profiled_with_py_spy": args.profile,
            "dispatcher_overrides": args.dispatcher_settings,
        },
        **report,
        "profiles": bench.profiles,
    }
    out = args.out or rb.RESULTS / f"webhooks-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
