"""`python -m shared.migrate` (`make migrate`): create the database if missing, apply migrations.

Safe to run from several replicas at once (see `shared.db.migrate`)."""

from __future__ import annotations

import asyncio

import structlog

from shared import db
from shared.config import Settings, load_settings
from shared.logs import configure_logging

log = structlog.get_logger(__name__)


async def prepare(settings: Settings) -> list[str]:
    """Create the database when it does not exist, then apply pending migrations."""
    if await db.ensure_database(settings.DATABASE_URL):
        log.info("database created", database=db.database_name(settings.DATABASE_URL))
    return await db.migrate(settings.DATABASE_URL)


def main() -> None:
    settings = load_settings()
    configure_logging(settings, "migrate")
    applied = asyncio.run(prepare(settings))
    log.info("database up to date", applied=len(applied))


if __name__ == "__main__":
    main()
