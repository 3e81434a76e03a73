"""What became of one tenant's events, read from every place they should have reached: the
outbox (every event the API committed), the audit log, the webhook receiver (by X-Webhook-Id),
the notifier's `notifications` rows and the SMTP server's mailboxes.

`Ledger.problems` names every broken promise: an event not audited, audited twice or audited
without existing; a subscribed event never delivered, or delivered without existing; an email
code not sent; and, per (event type, userId), fewer events than acknowledged requests, or more
than the acknowledged plus the uncertain ones (503 or no answer).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import asyncpg

from tests.fakes.smtp_server import FakeSmtp
from tests.fakes.webhook_receivers import PythonReceiver
from tests.reliability.load import SUBSCRIBED, Outcome

OUTBOX_SQL = """
SELECT seq, id, type, e ->> 'userId' AS user_id, e -> 'data' ->> 'to' AS recipient,
       sent_at IS NOT NULL AS sent
FROM outbox, LATERAL (SELECT convert_from(body, 'UTF8')::jsonb AS e) AS parsed
WHERE e ->> 'ownerId' = $1
"""
AUDIT_SQL = "SELECT event_id, count(*) AS n FROM audit_log WHERE owner_id = $1 GROUP BY event_id"
NOTIFICATIONS_SQL = "SELECT id, status FROM notifications WHERE owner_id = $1"
COMMAND_PREFIX = "notification."


@dataclass
class Ledger:
    events: dict[uuid.UUID, tuple[str, str]] = field(default_factory=dict)  # id -> (type, userId)
    recipients: dict[uuid.UUID, str] = field(default_factory=dict)  # command id -> address
    unsent: int = 0
    # Events committed before the webhook existed: the receiver may or may not get them.
    before_webhook: set[uuid.UUID] = field(default_factory=set)
    audited: Counter[uuid.UUID] = field(default_factory=Counter)
    delivered: Counter[uuid.UUID] = field(default_factory=Counter)
    notified: dict[uuid.UUID, str] = field(default_factory=dict)
    mailed: Counter[str] = field(default_factory=Counter)

    @classmethod
    async def read(
        cls, conn: asyncpg.Connection, owner_id: str, receiver: PythonReceiver, smtp: FakeSmtp
    ) -> Ledger:
        ledger = cls()
        rows = await conn.fetch(OUTBOX_SQL, owner_id)
        webhook_seq = min((r["seq"] for r in rows if r["type"] == "webhook.created"), default=0)
        for row in rows:
            ledger.events[row["id"]] = (row["type"], row["user_id"])
            if row["seq"] < webhook_seq:
                ledger.before_webhook.add(row["id"])
            if row["type"].startswith(COMMAND_PREFIX):
                ledger.recipients[row["id"]] = row["recipient"].lower()
            ledger.unsent += not row["sent"]
        owner = uuid.UUID(owner_id)
        audited = await conn.fetch(AUDIT_SQL, owner)
        ledger.audited.update({row["event_id"]: row["n"] for row in audited})
        ledger.delivered.update(uuid.UUID(r["headers"]["x-webhook-id"]) for r in receiver.requests)
        notified = await conn.fetch(NOTIFICATIONS_SQL, owner)
        ledger.notified = {row["id"]: row["status"] for row in notified}
        ledger.mailed.update(r.lower() for m in smtp.messages for r in m.rcpt_tos)
        return ledger

    def ids(self, *, types: set[str] | None = None, commands: bool = False) -> set[uuid.UUID]:
        return {
            i for i, (t, _) in self.events.items()
            if t.startswith(COMMAND_PREFIX) == commands and (types is None or t in types)
        }

    @property
    def domain(self) -> set[uuid.UUID]:
        return self.ids()

    @property
    def deliverable(self) -> set[uuid.UUID]:
        """Events the webhook subscribes to, committed after it was created."""
        return self.ids(types=set(SUBSCRIBED)) - self.before_webhook

    @property
    def commands(self) -> set[uuid.UUID]:
        return self.ids(commands=True)

    @property
    def emailed(self) -> set[uuid.UUID]:
        """Commands recorded as sent whose address got a message."""
        return {
            c for c in self.commands
            if self.notified.get(c) == "sent" and self.mailed[self.recipients[c]]
        }

    def settled(self) -> bool:
        """Everything that should have happened has (duplicates aside)."""
        return (
            self.unsent == 0
            and self.domain <= set(self.audited)
            and self.deliverable <= set(self.delivered)
            and self.emailed == self.commands
        )

    def problems(self, outcomes: list[Outcome], before_load: set[uuid.UUID]) -> list[str]:
        found = []

        def report(what: str, ids: set[uuid.UUID] | dict[uuid.UUID, int]) -> None:
            if ids:
                sample = ", ".join(f"{i} {self.events.get(i, '?')}" for i in list(ids)[:5])
                found.append(f"{len(ids)} {what}: {sample}")

        if self.unsent:
            found.append(f"{self.unsent} events still in the outbox, never relayed")
        report("events not audited", self.domain - set(self.audited))
        report("audit entries of no event", set(self.audited) - self.domain)
        report("events audited more than once", {i: n for i, n in self.audited.items() if n > 1})
        report("subscribed events not delivered", self.deliverable - set(self.delivered))
        subscribed = self.ids(types=set(SUBSCRIBED))
        report("deliveries of no subscribed event", set(self.delivered) - subscribed)
        report("email codes not sent", self.commands - self.emailed)
        committed = Counter(e for i, e in self.events.items() if i not in before_load)
        acknowledged = Counter(o.event for o in outcomes if o.acknowledged)
        uncertain = Counter(o.event for o in outcomes if o.uncertain)
        for key in sorted(set(committed) | set(acknowledged)):
            if not acknowledged[key] <= committed[key] <= acknowledged[key] + uncertain[key]:
                found.append(
                    f"{key}: {committed[key]} events committed for {acknowledged[key]} "
                    f"acknowledged and {uncertain[key]} uncertain requests"
                )
        return found


async def settle(
    database_url: str, owner_id: str, receiver: PythonReceiver, smtp: FakeSmtp, timeout: float
) -> tuple[Ledger, float]:
    """Read the ledger until everything has been audited, delivered and sent, or `timeout`
    seconds have passed; the last ledger read, and the seconds it took."""
    started = time.monotonic()
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            ledger = await Ledger.read(conn, owner_id, receiver, smtp)
            elapsed = time.monotonic() - started
            if ledger.settled() or elapsed >= timeout:
                return ledger, elapsed
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
