"""`make audit-verify` (`python -m audit.verify [--owner ID]`): check every owner's hash chain
(or one), print a line per owner, and exit 1 naming the first bad entry if any chain is broken."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid

from shared import audit_chain, db
from shared.config import load_settings

from audit import store


async def run(owner: uuid.UUID | None) -> int:
    settings = load_settings()
    broken = 0
    async with db.create_pool(settings) as pool, pool.acquire() as conn:
        owners = [owner] if owner else await store.owners(conn)
        for owner_id in owners:
            verdict = await audit_chain.verify_owner(conn, owner_id)
            if verdict.valid:
                print(f"{owner_id}: ok, {verdict.checked} entries")
            else:
                broken += 1
                print(
                    f"{owner_id}: BROKEN at entry {verdict.first_bad_seq} (id {verdict.first_bad_id}): "
                    f"{verdict.reason}; {verdict.checked} entries before it verify"
                )
    print(f"{len(owners)} chain(s) checked, {broken} broken")
    return 1 if broken else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--owner", type=uuid.UUID, help="check only this owner's chain")
    sys.exit(asyncio.run(run(parser.parse_args().owner)))


if __name__ == "__main__":
    main()
