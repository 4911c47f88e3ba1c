"""Versioned SQL migrations applied idempotently at start, under a Postgres advisory lock.

Why not Alembic or yoyo: both want SQLAlchemy or a sync DB-API driver next to asyncpg, for what
is a handful of forward-only SQL files. This runner applies ``migrations/NNNN_name.sql`` in order,
each in its own transaction, records it in ``schema_migrations``, and holds an advisory lock so
concurrent scorer replicas starting together do not race.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

log = logging.getLogger(__name__)
LOCK_ID = 7_346_215_001  # arbitrary, fixed: "leaderboard migrations"


def available() -> list[tuple[int, str, str]]:
    files = resources.files("leaderboard.scorer").joinpath("migrations")
    found = []
    for entry in files.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.name, entry.read_text()))
    return sorted(found)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    applied_now = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for number, name, sql in available():
            if number in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", number, name
                )
            log.info("applied migration %s", name)
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
    return applied_now
