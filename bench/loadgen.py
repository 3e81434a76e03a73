"""A small aiohttp load generator for what wrk cannot drive: requests that depend on the answer
before them (a 2FA login: the password, then the code with the login's tempToken), a weighted
mix of request kinds with the latency of each kind (the login storm), and a low, steady rate
beside a load (the health sampler). These scenarios run at tens of requests a second, where this
process's own CPU is small (it is measured as `bench` in the CPU figures).

- `closed_loop`: `connections` workers, each sending its next request when the last one is
  answered, for `seconds`; requests answered after the end are not counted (as with wrk), and
  the ones still in flight then are abandoned.
- `open_loop`: one request every 1/rate seconds, each at its own time whatever the earlier ones
  are doing, until stopped.
- `summarise`: the figures of a list of samples in the shape of run_bench.summarise's.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp


@dataclass(slots=True)
class Sample:
    kind: str
    start: float  # monotonic seconds, when the (first) request was sent
    end: float  # when the (last) answer arrived
    status: int  # the (last) status; 0: no answer (connection error or timeout)
    ok: bool  # the answer the scenario expects
    late_ms: float = 0.0  # open loop: how late the request left after its due time


# One request (or a dependent pair) on the session; None: nothing left to send, stop this worker.
Op = Callable[[aiohttp.ClientSession], Awaitable[Sample | None]]


def session(connections: int, timeout: float = 60) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout), trust_env=False
    )


async def send(
    http: aiohttp.ClientSession,
    kind: str,
    method: str,
    url: str,
    expect: int,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[Sample, Any]:
    """One request: its sample and its JSON answer (None if none)."""
    start = time.monotonic()
    status, answer = 0, None
    try:
        async with http.request(method, url, json=body, headers=headers) as r:
            status = r.status
            answer = await r.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        pass
    return Sample(kind, start, time.monotonic(), status, status == expect), answer


async def closed_loop(
    op: Op, connections: int, seconds: float, timeout: float = 60
) -> tuple[list[Sample], dict[str, Any]]:
    """Run `op` from `connections` workers for `seconds`; the samples answered in time, and
    when the run started, ended, and how many workers ran out of requests."""
    samples: list[Sample] = []
    exhausted = 0
    start = time.monotonic()
    deadline = start + seconds

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal exhausted
        while time.monotonic() < deadline:
            sample = await op(http)
            if sample is None:
                exhausted += 1
                return
            if sample.end <= deadline:
                samples.append(sample)

    async with session(connections, timeout) as http:
        tasks = [asyncio.create_task(worker(http)) for _ in range(connections)]
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    ended = min(time.monotonic(), deadline)
    return samples, {"started": start, "seconds": ended - start, "exhausted_workers": exhausted}


async def open_loop(
    kind: str, url: str, rate: float, stop: asyncio.Event, expect: int = 200
) -> list[Sample]:
    """GET `url` every 1/rate s until `stop` is set; a request per tick, on its own."""
    samples: list[Sample] = []
    tasks: list[asyncio.Task[None]] = []

    async def one(http: aiohttp.ClientSession, due: float) -> None:
        sample, _ = await send(http, kind, "GET", url, expect)
        sample.late_ms = 1000 * (sample.start - due)
        samples.append(sample)

    async with session(0, timeout=30) as http:
        t0 = time.monotonic()
        k = 0
        while not stop.is_set():
            due = t0 + k / rate
            delay = due - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            tasks.append(asyncio.create_task(one(http, due)))
            k += 1
        await asyncio.gather(*tasks)
    return samples


def percentile(ordered: list[float], q: float) -> float:
    """The q-th percentile (0-100) of sorted values, nearest rank."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summarise(samples: list[Sample], seconds: float) -> dict[str, Any]:
    """requests, requests/s, latency (ms) and errors, as run_bench.summarise reports a wrk run:
    `socket_errors` = no answer, `unexpected` = an answer other than the expected one."""
    ms = sorted(1000 * (s.end - s.start) for s in samples)
    socket_errors = sum(1 for s in samples if s.status == 0)
    unexpected = sum(1 for s in samples if s.status and not s.ok)
    statuses = Counter(str(s.status) for s in samples)
    latency = {f"p{q}".replace(".", ""): round(percentile(ms, q), 2) for q in (50, 75, 90, 99)}
    latency["p999"] = round(percentile(ms, 99.9), 2)
    latency |= {
        "min": round(ms[0], 2) if ms else 0.0,
        "mean": round(sum(ms) / len(ms), 2) if ms else 0.0,
        "max": round(ms[-1], 2) if ms else 0.0,
    }
    result: dict[str, Any] = {
        "requests": len(samples),
        "seconds": round(seconds, 2),
        "requests_per_second": round(len(samples) / seconds, 1) if seconds else 0.0,
        "latency_ms": latency,
        "unexpected": unexpected,
        "socket_errors": socket_errors,
        "errors_total": unexpected + socket_errors,
        "statuses": dict(sorted(statuses.items())),
    }
    late = sorted(s.late_ms for s in samples if s.late_ms)
    if late:  # open loop: a late sender would hide a slow server
        result["send_late_ms"] = {"p99": round(percentile(late, 99), 2), "max": round(late[-1], 2)}
    return result


def by_kind(samples: list[Sample], seconds: float) -> dict[str, dict[str, Any]]:
    kinds = sorted({s.kind for s in samples})
    return {k: summarise([s for s in samples if s.kind == k], seconds) for k in kinds}
