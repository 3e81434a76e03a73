"""`make soak` (`python -m tests.reliability.soak --seconds 600`): the whole system under steady
mixed load for a while, with every service's memory and connections sampled, to show whether
anything grows without bound.

The system is started as the fault runs start it (private PostgreSQL, Redis and RabbitMQ on free
ports, the four services as processes; see tests/reliability/conftest.py), and the load is theirs
(wrong codes, logins and email setups: every consumer has work). Every `--interval` seconds each
service's resident memory (VmRSS), outgoing established TCP connections (to the servers, the
webhook receiver, SMTP; clients of its own port are the load's doing) and open file descriptors
are read from /proc and printed (database pools are fixed-size here, so they do not resize). At
the end: per service, the least-squares slope of each over the samples after the warm-up (the
first fifth, at most a minute), and a verdict. Growth is flagged when the
slope, over the measured window, adds more than max(2 MB, 5 %) of memory or more than 5
connections. Exit status 1 when something grows or an event went missing, else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass

import aiohttp

from shared.logs import configure_logging

from tests.conftest import make_settings
from tests.fakes.smtp_server import FakeSmtp
from tests.fakes.webhook_receivers import PythonReceiver, python_receiver
from tests.reliability.ledger import settle
from tests.reliability.load import Load, Tenant
from tests.reliability.system import READY_TIMEOUT, System, running_stack

ESTABLISHED = "01"
MEMORY_TOLERANCE_MB = 2.0
MEMORY_TOLERANCE_SHARE = 0.05
# Pools settling at their working size add a few connections (the API's Redis pool grows on
# demand: 1 to 3 in two minutes here); a leak adds one per request or event, thousands.
CONNECTION_TOLERANCE = 5.0


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the load started
    rss_mb: float
    connections: int
    fds: int


def _socket_inodes(pid: int) -> tuple[set[str], int]:
    """The socket inodes among the process's open files, and how many files it has open."""
    inodes, count = set(), 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        count += 1
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes, count


def _established() -> dict[str, int]:
    """Every established TCP socket on the machine: inode -> local port."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == ESTABLISHED:
                    found[cols[9]] = int(cols[1].rsplit(":", 1)[1], 16)
    return found


def sample(pid: int, listening_port: int, at: float, established: dict[str, int]) -> Sample:
    """The process's memory, its outgoing connections (to PostgreSQL, Redis, RabbitMQ, webhook
    receivers, SMTP: not the clients connected to its own port, which the load decides) and fds."""
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    inodes, fds = _socket_inodes(pid)
    outgoing = [i for i in inodes if i in established and established[i] != listening_port]
    return Sample(at, rss_kb / 1024, len(outgoing), fds)


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if var == 0:
        return 0.0
    return 60 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var


def verdicts(samples: dict[str, list[Sample]], warmup: float) -> tuple[list[str], bool]:
    """One summary line per service, and whether any of them grows."""
    lines = [f"{'service':<20}{'rss first→last MB':>20}{'MB/min':>9}{'conns first→last':>18}"
             f"{'conns/min':>11}{'fds first→last':>16}  verdict"]
    growing = False
    for name, series in samples.items():
        kept = [s for s in series if s.at >= warmup] or series
        minutes = (kept[-1].at - kept[0].at) / 60
        rss = slope_per_minute([(s.at, s.rss_mb) for s in kept])
        conns = slope_per_minute([(s.at, s.connections) for s in kept])
        mean_rss = sum(s.rss_mb for s in kept) / len(kept)
        memory_grows = rss * minutes > max(MEMORY_TOLERANCE_MB, MEMORY_TOLERANCE_SHARE * mean_rss)
        conns_grow = conns * minutes > CONNECTION_TOLERANCE
        found = [("memory grows", memory_grows), ("connections grow", conns_grow)]
        verdict = "; ".join(what for what, bad in found if bad) or "no growth trend"
        growing |= memory_grows or conns_grow
        first, last = kept[0], kept[-1]
        lines.append(
            f"{name:<20}{f'{first.rss_mb:.1f}→{last.rss_mb:.1f}':>20}{rss:>9.2f}"
            f"{f'{first.connections}→{last.connections}':>18}{conns:>11.2f}"
            f"{f'{first.fds}→{last.fds}':>16}  {verdict}"
        )
    return lines, growing


def _row(at: float, current: dict[str, Sample]) -> str:
    cells = "".join(f"{f'{s.rss_mb:.1f}/{s.connections}/{s.fds}':>22}" for s in current.values())
    return f"{at:>7.0f}{cells}"


async def soak(seconds: float, interval: float, rate: float) -> int:
    configure_logging(make_settings(), "soak")  # warnings only, as the services
    # Fixed-size database pools: a connection count that moves is then a leak, not a resize.
    async with running_stack(DB_POOL_MIN=10, DB_POOL_MAX=10) as stack, python_receiver() as rx:
        return await _run(stack.system, stack.smtp, rx, seconds, interval, rate)


async def _run(
    system: System, smtp: FakeSmtp, rx: PythonReceiver, seconds: float, interval: float, rate: float
) -> int:
    async with aiohttp.ClientSession(system.api_url) as session:
        tenant = await Tenant.create(session, rx.url)
    url = system.settings.DATABASE_URL
    before = set((await settle(url, tenant.owner_id, rx, smtp, timeout=0))[0].events)
    pids = {name: (s.proc.pid, s.port) for name, s in system.services.items() if s.proc is not None}
    samples: dict[str, list[Sample]] = {name: [] for name in pids}
    print(f"soak: {seconds:.0f} s at {rate:.0f} requests/s; every {interval:.0f} s per service: "
          "RSS MB / outgoing TCP connections / open fds", flush=True)
    print(f"{'t (s)':>7}" + "".join(f"{name:>22}" for name in pids), flush=True)
    async with Load(system.api_url, tenant, rate=rate, max_seconds=seconds + 60) as load:
        started = time.monotonic()
        n = 0
        while True:
            at = time.monotonic() - started
            established = _established()
            current = {n: sample(pid, port, at, established) for n, (pid, port) in pids.items()}
            for name, s in current.items():
                samples[name].append(s)
            print(_row(at, current), flush=True)
            n += 1
            if at >= seconds:
                break
            next_at = min(started + n * interval, started + seconds)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await system.ready(READY_TIMEOUT)
    ledger, _ = await settle(url, tenant.owner_id, rx, smtp, timeout=120)
    statuses: dict[int | None, int] = {}
    for o in load.outcomes:
        statuses[o.status] = statuses.get(o.status, 0) + 1
    print(f"\nrequests: {len(load.outcomes)} by status {dict(sorted(statuses.items(), key=str))}")
    audited = len(set(ledger.audited) & ledger.domain)
    delivered = len(set(ledger.delivered) & ledger.deliverable)
    print(f"events: {len(ledger.domain)} committed, {audited} audited, {delivered} of "
          f"{len(ledger.deliverable)} subscribed delivered; emails: {len(ledger.emailed)} of "
          f"{len(ledger.commands)} sent")
    warmup = min(60.0, seconds / 5)
    lines, growing = verdicts(samples, warmup)
    print(f"\ntrends after a {warmup:.0f} s warm-up (least-squares slope):")
    print("\n".join(lines))
    problems = ledger.problems(load.outcomes, before)
    bad_statuses = sum(1 for o in load.outcomes if not o.acknowledged)
    verdict = "PASS" if not growing and not problems and not bad_statuses else "FAIL"
    for problem in problems:
        print(f"  {problem}")
    print(f"\nsoak verdict: {verdict}")
    return 0 if verdict == "PASS" else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="load duration (default 600)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (default 50)")
    args = parser.parse_args()
    return asyncio.run(soak(args.seconds, args.interval, args.rate))


if __name__ == "__main__":
    sys.exit(main())
