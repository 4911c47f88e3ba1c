"""Builds what the scorer runs on (the Postgres pool with the schema migrated, Redis, the Kafka
producer, and the :class:`Projector` over them) and closes it again: one ``async with`` shared by the
Faust worker (``entrypoints.worker``) and any other driver of the projection (``leaderboard replay``,
the benchmark's plain consumer), so they all open the stores the same way.

Start-up checks that need a consumer's point of view (rebuild a missing board, announce a version a
crash kept from going out, audit pending quarantines) are the worker's, not part of building: replay
empties the stores first and must not announce the old board.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from leaderboard.common.kafka import producer
from leaderboard.common.redis import redis_client
from leaderboard.scorer.adapters.migrate import migrate
from leaderboard.scorer.projector import Projector
from leaderboard.scorer.settings import ScorerSettings

POOL_SIZE = 4  # one batch at a time per worker, plus the admin route and start-up checks


@dataclass(frozen=True)
class Ports:
    settings: ScorerSettings
    pool: asyncpg.Pool
    redis: Redis
    producer: AIOKafkaProducer
    projector: Projector


@contextlib.asynccontextmanager
async def bootstrap(
    settings: ScorerSettings, *, pool_size: int = POOL_SIZE, publish: bool = True
) -> AsyncIterator[Ports]:
    """Open the stores (migrating Postgres first), yield the ports, close them in reverse order.
    ``publish=False`` builds a projector that writes no record to Kafka (a side-by-side replay)."""
    async with contextlib.AsyncExitStack() as stack:
        pool = await stack.enter_async_context(_pool(settings, pool_size))
        async with pool.acquire() as conn:
            await migrate(conn)
        redis = await stack.enter_async_context(redis_client(settings))
        # No linger: the projector queues a batch's sends (announcements, dead letters, audit
        # events) together before it awaits them, so they share a request anyway, and the 2 ms that
        # suit ingest's one-event requests would only hold up the next batch (issue 12).
        kafka = await stack.enter_async_context(producer(settings, linger_ms=0))
        projector = Projector(settings, pool, redis, kafka, publish=publish)
        yield Ports(settings, pool, redis, kafka, projector)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond the rollback of an open transaction that asyncpg
    always does. Its default, ``Connection.reset()``, runs a query of its own (close cursors, UNLISTEN,
    RESET ALL, release advisory locks) in an extra round trip after every use; no scorer path leaves
    any of that behind (the migration releases its advisory lock itself), and the batch path acquires
    a connection twice per batch (issue 12: two round trips of eight)."""


@contextlib.asynccontextmanager
async def _pool(settings: ScorerSettings, size: int) -> AsyncIterator[asyncpg.Pool]:
    """The scorer's pool; with ``postgres_schema``, one whose connections live in that schema
    (created when missing; the migrations then create their tables there)."""
    schema = settings.postgres_schema
    server_settings = None
    if schema is not None:
        conn = await asyncpg.connect(settings.postgres_dsn)
        try:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')  # a checked identifier
        finally:
            await conn.close()
        server_settings = {"search_path": f'"{schema}"'}
    pool = await asyncpg.create_pool(
        settings.postgres_dsn,
        min_size=1,
        max_size=size,
        command_timeout=30,
        server_settings=server_settings,
        reset=_keep_session,
    )
    try:
        yield pool
    finally:
        await pool.close()
