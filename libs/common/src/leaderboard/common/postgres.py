"""asyncpg pool lifecycle."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import asyncpg

from leaderboard.common.settings import CommonSettings


@contextlib.asynccontextmanager
async def postgres_pool(
    settings: CommonSettings, *, min_size: int = 1, max_size: int = 10
) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(
        settings.postgres_dsn, min_size=min_size, max_size=max_size, command_timeout=30
    )
    try:
        yield pool
    finally:
        await pool.close()
