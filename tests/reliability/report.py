"""The counts of each fault run, one row per scenario, printed as a table at the end of the
session (by this folder's conftest) and in a failing scenario's message."""

from __future__ import annotations

from dataclasses import dataclass, fields

from tests.reliability.ledger import Ledger
from tests.reliability.load import Outcome


@dataclass(frozen=True)
class Row:
    scenario: str
    requests: int
    acked: int
    http_503: int
    no_answer: int
    other_5xx: int
    outage_s: float
    ready_s: float
    events: int
    audited: int
    audit_dups: int
    subscribed: int
    delivered: int
    delivery_dups: int
    emails: int
    emailed: int
    settle_s: float

    @classmethod
    def of(
        cls, scenario: str, outcomes: list[Outcome], ledger: Ledger,
        outage_s: float, ready_s: float, settle_s: float,
    ) -> Row:
        audited = set(ledger.audited) & ledger.domain
        delivered = set(ledger.delivered) & ledger.deliverable
        return cls(
            scenario=scenario,
            requests=len(outcomes),
            acked=sum(o.acknowledged for o in outcomes),
            http_503=sum(o.status == 503 for o in outcomes),
            no_answer=sum(o.status is None for o in outcomes),
            other_5xx=sum(o.status is not None and o.status >= 500 and o.status != 503
                          for o in outcomes),
            outage_s=round(outage_s, 1),
            ready_s=round(ready_s, 1),
            events=len(ledger.domain),
            audited=len(audited),
            audit_dups=sum(n - 1 for n in ledger.audited.values()),
            subscribed=len(ledger.deliverable),
            delivered=len(delivered),
            delivery_dups=sum(n - 1 for n in ledger.delivered.values()),
            emails=len(ledger.commands),
            emailed=len(ledger.emailed),
            settle_s=round(settle_s, 1),
        )


def table(rows: list[Row]) -> str:
    """A plain-text table: a header and one line per row."""
    names = [f.name for f in fields(Row)]
    cells = [names] + [[str(getattr(r, n)) for n in names] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(names))]
    def line(row: list[str]) -> str:
        first, *rest = zip(row, widths, strict=True)
        return "  ".join([first[0].ljust(first[1]), *(c.rjust(w) for c, w in rest)])

    return "\n".join(line(row) for row in cells)


LEGEND = (
    "acked: answered as expected (the event is committed); 503/no_answer: uncertain; "
    "outage_s: fault injected until the dependency (or process) was back; ready_s: from then "
    "until every service's /api/health/ready said 200; events: domain events in the outbox; "
    "audited/delivered: of those, audited / received by the webhook (by event id), dups extra "
    "copies; emails: notifier commands, emailed: recorded sent and received by SMTP; settle_s: "
    "load end until all of it was done"
)

RESULTS: list[Row] = []
