"""HTTP throughput/latency benchmark of the API, driven by wrk. Prints its figures; asserts nothing.

`bash bench/run.sh` (or `make bench`) runs this with the venv's Python. It starts its own system
beside any developer's `make run`: database `tfa_bench`, Redis key prefix `tfa-bench:`, broker
prefix `bench.`, API on 127.0.0.1:3101 and the consumers' health ports on 3102-3104, fresh random
secrets, LOG_LEVEL=WARNING, BCRYPT_ROUNDS=12. It waits for every /health/ready, registers one
account, runs each scenario (a short warm-up, then a measured wrk run), prints a table, writes
bench/results/bench-<UTC time>.json (plus the services' logs next to it), then stops the services
and deletes the database, the Redis keys and the broker objects it created.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import aio_pika

from shared import db
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


def scenarios(duration: int, login_duration: int) -> list[Scenario]:
    return [
        Scenario("health/live", "GET", "/api/health/live", 64, "health.lua", duration),
        Scenario("auth/me", "GET", "/api/auth/me", 64, "me.lua", duration),
        Scenario("auth/login", "POST", "/api/auth/login", 16, "login.lua", login_duration),
        Scenario("auth/login", "POST", "/api/auth/login", 64, "login.lua", login_duration),
    ]


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
            for name in topology.all_queues(settings.WEBHOOK_RETRY_DELAYS):
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
    """The API and the three consumers, each in its own session, logging to files."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.workdir = Path(tempfile.mkdtemp(prefix="tfa-bench-"))  # no .env here
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for module in SERVICES:
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
            f"http://{HOST}:{port[1]}/health/ready" for port in SERVICES.values() if port
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

    def __init__(self, service_pids: dict[str, int]) -> None:
        self.service_groups = {
            pid: ("api" if m == "api" else "consumers") for m, pid in service_pids.items()
        }

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
        cores = dict.fromkeys(("api", "consumers", "postgres", "redis", "rabbitmq"), 0.0)
        others: list[tuple[float, str]] = []
        for pid, (comm, seconds) in end["procs"].items():
            before = start["procs"].get(pid)
            used = seconds - (before[1] if before and before[0] == comm else 0.0)
            group = self.group_of(pid, comm)
            if group:
                cores[group] += max(0.0, used) / elapsed
            elif pid != os.getpid() and comm != "[kernel]" and used > 0:
                others.append((used / elapsed, f"{comm}[{pid}]"))
        cores["wrk"] = (end["children"] - start["children"]) / elapsed
        named = sum(cores.values())
        busy = end["machine"][0] - start["machine"][0]
        total = end["machine"][1] - start["machine"][1]
        cores["machine"] = (os.cpu_count() or 1) * busy / total if total else 0.0
        cores["other"] = max(0.0, cores["machine"] - named)
        result: dict[str, Any] = {k: round(v, 2) for k, v in cores.items()}
        if top:
            result["busiest_other_processes"] = [
                {"process": name, "cores": round(c, 2)}
                for c, name in sorted(others, reverse=True)[:top]
                if c >= 0.01
            ]
        return result


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


# --------------------------------------------------------------------------- wrk


def wrk_version() -> str:
    out = subprocess.run(["wrk", "--version"], check=False, capture_output=True, text=True)
    return (out.stdout + out.stderr).splitlines()[0].strip()


def run_wrk(
    scenario: Scenario, seconds: int, threads: int, timeout: int, env: dict[str, str]
) -> tuple[dict[str, Any], str]:
    cmd = [
        "wrk",
        f"-t{min(threads, scenario.connections)}",
        f"-c{scenario.connections}",
        f"-d{seconds}s",
        f"--timeout={timeout}s",
        "--latency",
        "-s",
        str(LUA / scenario.script),
        f"http://{HOST}:{API_PORT}{scenario.path}",
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
    seconds = raw["duration_us"] / 1e6
    errors = raw["errors"]
    socket_errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    lat = raw["latency_us"]
    return {
        "requests": raw["requests"],
        "seconds": round(seconds, 2),
        "requests_per_second": round(raw["requests"] / seconds, 1) if seconds else 0.0,
        "latency_ms": {k: round(v / 1000, 2) for k, v in lat.items()},
        "non_2xx": errors["status"],
        "socket_errors": socket_errors,
        "errors_total": errors["status"] + socket_errors,
        "wrk_errors": errors,
    }


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


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_table(results: list[dict[str, Any]]) -> None:
    print()
    head = (
        f"{'scenario':<22} {'conns':>5} {'requests/s':>11} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'errors/non-2xx':>15}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        s = r["result"]
        name = f"{r['method']} {r['path']}"
        print(
            f"{name:<22} {r['connections']:>5} {s['requests_per_second']:>11.1f} "
            f"{s['latency_ms']['p50']:>9.2f} {s['latency_ms']['p99']:>9.2f} "
            f"{s['socket_errors']:>6}/{s['non_2xx']:<8}"
        )
    print()
    head = (
        f"{'CPU, cores used':<22} {'conns':>5} {'api':>6} {'consumers':>10} {'postgres':>9} "
        f"{'redis':>6} {'rabbitmq':>9} {'wrk':>6} {'other':>6} {'machine':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        c = r["cpu_cores"]
        print(
            f"{r['path']:<22} {r['connections']:>5} {c['api']:>6.2f} {c['consumers']:>10.2f} "
            f"{c['postgres']:>9.2f} {c['redis']:>6.2f} {c['rabbitmq']:>9.2f} {c['wrk']:>6.2f} "
            f"{c['other']:>6.2f} {c['machine']:>8.2f}"
        )
    print(
        f"(cores: 1.00 = one core busy for the whole run; this machine has {os.cpu_count()}. "
        "'other' = machine minus the named groups: kernel, other processes.)"
    )
    print()


def elsewhere(cpu: dict[str, Any]) -> str:
    busiest = ", ".join(f"{p['process']} {p['cores']}" for p in cpu["busiest_other_processes"])
    return busiest or "short-lived processes or the kernel"


def measure(
    scenario: Scenario,
    meter: CpuMeter,
    system: System,
    args: argparse.Namespace,
    wrk_env: dict[str, str],
) -> dict[str, Any]:
    """Warm up, wait for the system to idle, run wrk for the scenario's duration, print a line."""
    label = f"{scenario.method} {scenario.path} c={scenario.connections}"
    if args.warmup:
        print(f"  {label}: warm-up {args.warmup} s ...", flush=True)
        run_wrk(scenario, args.warmup, args.threads, args.timeout, wrk_env)
    waited = quiesce(meter)
    system.check_alive()
    print(f"  {label}: measuring {scenario.duration} s ...", flush=True)
    before = meter.snapshot()
    raw, human = run_wrk(scenario, scenario.duration, args.threads, args.timeout, wrk_env)
    cpu = meter.usage(before, meter.snapshot(), top=5)
    system.check_alive()
    summary = summarise(raw)
    latency = summary["latency_ms"]
    print(
        f"    {summary['requests_per_second']:.1f} req/s, p50 {latency['p50']} ms, "
        f"p99 {latency['p99']} ms, {summary['requests']} requests, errors "
        f"{summary['socket_errors']} socket / {summary['non_2xx']} non-2xx; "
        f"CPU api {cpu['api']} wrk {cpu['wrk']} machine {cpu['machine']} cores",
        flush=True,
    )
    if cpu["other"] > 0.2:
        print(
            f"    warning: {cpu['other']} cores went elsewhere ({elsewhere(cpu)}); "
            "this scenario's figures are disturbed",
            flush=True,
        )
    quiesce(meter)  # drain in-flight work (abandoned logins, events) before the next scenario
    return {
        "scenario": scenario.name,
        "method": scenario.method,
        "path": scenario.path,
        "connections": scenario.connections,
        "threads": min(args.threads, scenario.connections),
        "warmup_seconds": args.warmup,
        "duration_seconds": scenario.duration,
        "quiesce_seconds_before": waited,
        "result": summary,
        "cpu_cores": cpu,
        "wrk": raw,
        "wrk_output": human,
    }


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
    args = parser.parse_args()

    if shutil.which("wrk") is None:
        print(
            "wrk is not installed (bench/run.sh installs it: apt-get install -y wrk)",
            file=sys.stderr,
        )
        return 1
    busy = [p for p in [API_PORT] + [s[1] for s in SERVICES.values() if s] if port_in_use(p)]
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
    settings = settings_of(env)
    configure_logging(settings, "bench")  # WARNING: no per-migration lines
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    log_dir = RESULTS / f"logs-{stamp}"
    base = f"http://{HOST}:{API_PORT}"
    system = System(env, log_dir)

    def on_term(signum: int, _: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    results: list[dict[str, Any]] = []
    idle: dict[str, Any] = {}
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
        meter = CpuMeter(system.pids())
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

        for scenario in scenarios(args.duration, args.login_duration):
            if scenario.script == "me.lua":
                wrk_env["BENCH_ACCESS_TOKEN"] = access_token(base, account)
            results.append(measure(scenario, meter, system, args, wrk_env))
    except KeyboardInterrupt:
        print("interrupted; stopping", file=sys.stderr)
        return 130
    finally:
        system.stop()
        asyncio.run(cleanup_resources(settings))

    print_table(results)
    report = {
        "started_utc": stamp,
        "command": " ".join(["bash bench/run.sh", *sys.argv[1:]]),
        "source": source,
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "wrk": wrk_version(),
        },
        "settings": {
            "database": DATABASE,
            "redis_key_prefix": REDIS_KEY_PREFIX,
            "broker_prefix": BROKER_PREFIX,
            "api_port": API_PORT,
            "bcrypt_rounds": settings.BCRYPT_ROUNDS,
            "db_pool_max": settings.DB_POOL_MAX,
            "log_level": settings.LOG_LEVEL,
            "wrk_threads": args.threads,
            "wrk_timeout_seconds": args.timeout,
        },
        "notes": "cpu_cores: average cores used during the measured run (1.0 = one core); "
        "latency_ms from wrk's HdrHistogram of completed requests",
        "idle_cpu_cores": idle,
        "scenarios": results,
    }
    out = RESULTS / f"bench-{stamp}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
