"""Faults under steady load: RabbitMQ, PostgreSQL and Redis restarted, and each consumer and the
API killed with `kill -9` (then started again), while requests that each commit an event keep
coming. Afterwards every event the API committed is in the audit log exactly once, every
subscribed one reached the webhook receiver (by X-Webhook-Id; extra copies are allowed and
counted), every email code was sent, all within 30 s of the load's end; no request got a 5xx
other than a 503 while the fault lasted (nor, but for the API's own restart, went unanswered);
and every service is ready again within 30 s of the fault's end.

`make test` runs a short version (a RabbitMQ restart and a dispatcher kill, short phases);
`make test-reliability` (RELIABILITY=full) runs every fault with longer phases.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import aiohttp
import pytest

from tests.fakes.webhook_receivers import python_receiver
from tests.reliability.ledger import settle
from tests.reliability.load import EXPECTED, Load, Outcome, Tenant
from tests.reliability.report import RESULTS, Row, table
from tests.reliability.system import READY_TIMEOUT, Stack

FULL = os.environ.get("RELIABILITY") == "full"
RECOVERY_LIMIT = 30.0
# Once the load stops, the backlog (retries included) is worked off within this.
SETTLE_LIMIT = 30.0
SETTLE_TIMEOUT = 90.0
RATE = 50.0


@dataclass(frozen=True)
class Phases:
    before: float  # load before the fault
    down: float  # the dependency or process stays down this long
    after: float  # load after every service is ready again


PHASES = Phases(before=5, down=8, after=8) if FULL else Phases(before=3, down=2, after=3)


@dataclass(frozen=True)
class Fault:
    name: str
    target: str  # a private server ("rabbitmq", ...) or a service ("api", "audit", ...)

    @property
    def kills_api(self) -> bool:
        return self.target == "api"

    async def inject(self, stack: Stack) -> None:
        """A server is stopped the way a restart stops it; a service is killed with SIGKILL."""
        server = stack.deps.servers.get(self.target)
        if server is not None:
            await server.stop()
        else:
            await stack.system.services[self.target].stop(kill=True)

    async def restore(self, stack: Stack) -> None:
        """Start it again (a server: until it answers; a service: just launched)."""
        server = stack.deps.servers.get(self.target)
        if server is not None:
            await server.start()
        else:
            await stack.system.services[self.target].start()


FAULTS = [
    Fault("restart RabbitMQ", "rabbitmq"),
    Fault("restart PostgreSQL", "postgresql"),
    Fault("restart Redis", "redis"),
    Fault("kill -9 notifier", "notifier"),
    Fault("kill -9 webhook-dispatcher", "webhook-dispatcher"),
    Fault("kill -9 audit", "audit"),
    Fault("kill -9 API", "api"),
]
SHORT = {"restart RabbitMQ", "kill -9 webhook-dispatcher"}


@pytest.mark.parametrize(
    "fault", [f for f in FAULTS if FULL or f.name in SHORT], ids=lambda f: f.name.replace(" ", "_")
)
async def test_every_acknowledged_event_is_audited_once_and_delivered_despite_the_fault(
    fault: Fault, stack: Stack
) -> None:
    system = stack.system
    url = system.settings.DATABASE_URL
    await system.ready(READY_TIMEOUT)  # an earlier scenario left it healthy
    async with python_receiver() as rx:
        async with aiohttp.ClientSession(system.api_url) as session:
            tenant = await Tenant.create(session, rx.url)
        before = set((await settle(url, tenant.owner_id, rx, stack.smtp, timeout=0))[0].events)
        async with Load(system.api_url, tenant, rate=RATE) as load:
            await asyncio.sleep(PHASES.before)
            injected = time.monotonic()
            await fault.inject(stack)
            await asyncio.sleep(PHASES.down)
            await fault.restore(stack)
            back = time.monotonic()
            ready_s = await system.ready(READY_TIMEOUT)
            recovered = time.monotonic()
            await asyncio.sleep(PHASES.after)
        ledger, settle_s = await settle(url, tenant.owner_id, rx, stack.smtp, SETTLE_TIMEOUT)
    row = Row.of(fault.name, load.outcomes, ledger, back - injected, ready_s, settle_s)
    RESULTS.append(row)

    problems = ledger.problems(load.outcomes, before)
    problems += answer_problems(load.outcomes, injected, recovered, fault)
    if ready_s > RECOVERY_LIMIT:
        problems.append(f"ready {ready_s:.1f} s after the fault (limit {RECOVERY_LIMIT:.0f} s)")
    if settle_s > SETTLE_LIMIT:
        problems.append(f"the backlog took {settle_s:.1f} s to clear (limit {SETTLE_LIMIT:.0f} s)")
    if row.other_5xx:
        problems += system.services["api"].unhandled_errors()[:3]
    assert not problems, f"{fault.name}:\n" + "\n".join(problems) + "\n" + table([row])


def answer_problems(
    outcomes: list[Outcome], injected: float, recovered: float, fault: Fault
) -> list[str]:
    """Statuses a user must never see: any 5xx but 503, a 503 outside the fault's window, an
    unexpected 4xx, or no answer at all (allowed only while the API itself is down)."""

    def during(o: Outcome) -> bool:
        return o.ended >= injected and o.started <= recovered

    bad: dict[str, list[Outcome]] = {}
    for o in outcomes:
        if o.acknowledged:
            continue
        if o.status is None:
            why = None if fault.kills_api and during(o) else f"no answer ({o.error})"
        elif o.status == 503:
            why = None if during(o) else "503 outside the fault's window"
        else:
            why = f"{o.status} on {o.kind} (expected {EXPECTED[o.kind][0]})"
        if why:
            bad.setdefault(why, []).append(o)
    return [
        f"{len(found)} requests: {why} (first {found[0].started - injected:+.1f} s from the fault)"
        for why, found in bad.items()
    ]
