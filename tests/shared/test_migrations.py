"""Migrations: applied in order, recorded, and safe when several replicas start at once."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg

from shared import db


async def test_concurrent_migrations_apply_each_version_once():
    url = f"postgresql://postgres@127.0.0.1:5432/tfa_test_migrate_{secrets.token_hex(4)}"
    await db.ensure_database(url)
    try:
        results = await asyncio.gather(*(db.migrate(url) for _ in range(5)))
        versions = [p.stem for p in db.migration_files()]
        applied = [v for r in results for v in r]
        assert sorted(applied) == sorted(versions)  # each version applied by exactly one replica
        conn = await asyncpg.connect(url)
        try:
            recorded = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")]
        finally:
            await conn.close()
        assert recorded == versions
        assert await db.migrate(url) == []  # a later start finds nothing to do
    finally:
        await db.drop_database(url)


async def test_ensure_database_is_idempotent():
    url = f"postgresql://postgres@127.0.0.1:5432/tfa_test_ensure_{secrets.token_hex(4)}"
    try:
        created = await asyncio.gather(*(db.ensure_database(url) for _ in range(3)))
        assert created.count(True) == 1
    finally:
        await db.drop_database(url)
