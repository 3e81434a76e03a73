"""PostgreSQL access: the pool, database creation, and versioned migrations.

Migrations are the numbered `.sql` files in `shared/migrations` (package data, so an installed
package carries them), applied in order, each in its
own transaction and recorded in `schema_migrations`. A session-level advisory lock makes it safe
for several replicas to start at once: one applies, the others wait and then find nothing to do.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

from shared import json_codec
from shared.config import Settings

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Arbitrary constant shared by every replica: "tfa-migrate" as an int64.
MIGRATION_LOCK_KEY = 0x7466612D6D6967

CREATE_MIGRATIONS_TABLE_SQL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
APPLIED_SQL = "SELECT version FROM schema_migrations"
RECORD_SQL = "INSERT INTO schema_migrations (version) VALUES ($1)"

# Where a single statement runs: a held connection (inside a transaction), or the pool, which
# lends a connection for just that statement, so a request does not hold one while it waits
# on Redis or computes.
Queries: TypeAlias = "asyncpg.Pool | asyncpg.Connection"


class Statement(NamedTuple):
    """A statement and its arguments, for a caller to run (or compose, as `outbox.add_if` does)."""

    sql: str
    args: tuple[Any, ...]


def _jsonb_encode(value: object) -> bytes:
    return b"\x01" + json_codec.dumps(value)


def _jsonb_decode(data: bytes) -> object:
    return json_codec.loads(data[1:])  # the first byte is jsonb's binary format version (1)


async def init_connection(conn: asyncpg.Connection) -> None:
    # Binary format, so that COPY (which is binary) can carry jsonb too.
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog", format="binary"
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's `RESET ALL; UNLISTEN *; ...` round trip: nothing here
    sets session state outside a transaction (only `SET LOCAL`), and an open transaction is still
    rolled back by the pool before this runs."""


@asynccontextmanager
async def create_pool(settings: Settings, *, size: int | None = None) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool (the process's, or a small one of `size` for a background task that
    must not queue behind requests); closed when the context ends."""
    pool = await asyncpg.create_pool(
        settings.DATABASE_URL,
        min_size=size or min(settings.DB_POOL_MIN, settings.DB_POOL_MAX),
        max_size=size or settings.DB_POOL_MAX,
        init=init_connection,
        reset=_keep_session,
        command_timeout=10,
    )
    try:
        yield pool
    finally:
        await pool.close()


async def ping(pool: asyncpg.Pool) -> None:
    async with pool.acquire(timeout=2) as conn:
        await conn.fetchval("SELECT 1")


def server_url(database_url: str, database: str) -> str:
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_name(database_url: str) -> str:
    return urlsplit(database_url).path.lstrip("/")


async def ensure_database(database_url: str) -> bool:
    """Create the database named in the URL if it does not exist; True when it was created."""
    name = database_name(database_url)
    conn = await asyncpg.connect(server_url(database_url, "postgres"), timeout=5)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        try:
            # Identifiers cannot be parameters; quote_ident makes the name safe.
            quoted = await conn.fetchval("SELECT quote_ident($1)", name)
            await conn.execute(f"CREATE DATABASE {quoted}")
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            return False  # another replica created it between our check and our CREATE
        return True
    finally:
        await conn.close()


async def drop_database(database_url: str) -> None:
    name = database_name(database_url)
    conn = await asyncpg.connect(server_url(database_url, "postgres"), timeout=5)
    try:
        quoted = await conn.fetchval("SELECT quote_ident($1)", name)
        await conn.execute(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)")
    finally:
        await conn.close()


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    """The numbered migrations, in order; none at all is an installation error, not "up to date"."""
    found = sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    if not found:
        raise FileNotFoundError(f"no migrations in {directory}: the package was installed without them")
    return found


async def migrate(database_url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations in order under an advisory lock; returns the versions applied."""
    conn = await asyncpg.connect(database_url, timeout=10)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(CREATE_MIGRATIONS_TABLE_SQL)
            done = {row["version"] for row in await conn.fetch(APPLIED_SQL)}
            for path in migration_files(directory):
                version = path.stem
                if version in done:
                    continue
                started = time.perf_counter()
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(RECORD_SQL, version)
                applied_now.append(version)
                log.info(
                    "migration applied",
                    version=version,
                    ms=round((time.perf_counter() - started) * 1000, 1),
                )
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()
    return applied_now
