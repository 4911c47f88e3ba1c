"""Builds what ingest runs on, and closes it: the Redis client, the Kafka producer, the adapters on
them, the use cases, and the readiness probe over the same clients.

``bootstrap(settings, catalog)`` is an async context manager (cosmicpython's ``bootstrap.py``): the HTTP
app enters it in its lifespan, and a test or a script can enter it the same way to drive
:class:`~leaderboard.ingest.service.IngestService` without HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from leaderboard.common.auth import TokenVerifier
from leaderboard.common.catalog import Catalog
from leaderboard.common.kafka import ensure_topics, producer
from leaderboard.common.redis import redis_client
from leaderboard.common.topics import Topics
from leaderboard.common.web import ClientIpResolver
from leaderboard.ingest.adapters.applied import AppliedWaiter
from leaderboard.ingest.adapters.batching import ScriptBatcher
from leaderboard.ingest.adapters.publisher import Publisher
from leaderboard.ingest.adapters.ratelimit import RateLimiter
from leaderboard.ingest.adapters.tickets import TicketStore
from leaderboard.ingest.service import IngestService
from leaderboard.ingest.settings import IngestSettings


@dataclass
class Ports:
    """What the entrypoints need, built by :func:`bootstrap`."""

    settings: IngestSettings
    catalog: Catalog
    topics: Topics
    verifier: TokenVerifier
    service: IngestService
    limiter: RateLimiter
    publisher: Publisher
    client_ip: ClientIpResolver
    redis: Redis
    kafka: AIOKafkaProducer


def load_catalog(settings: IngestSettings) -> Catalog:
    """The action catalog, refused at once when seed 004's /score would map to a type it lacks."""
    catalog = Catalog.load(settings.catalog_file)
    if settings.legacy_action_type not in catalog.actions:
        raise RuntimeError(f"legacy_action_type {settings.legacy_action_type!r} is not in the catalog")
    return catalog


@contextlib.asynccontextmanager
async def bootstrap(settings: IngestSettings, catalog: Catalog) -> AsyncIterator[Ports]:
    topics = Topics(settings.topic_prefix)
    verifier = TokenVerifier(settings)
    await ensure_topics(settings)
    # One quick retry on a dropped connection: after Redis restarts, pooled connections are dead
    # and the first command on each fails; a fresh connection answers. (Timeouts are not
    # retried: they would only stretch an outage's 503s.)
    retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), 2, supported_errors=(RedisConnectionError,))
    async with (
        redis_client(settings, retry=retry, retry_on_error=[RedisConnectionError]) as redis,
        producer(settings) as kafka,
    ):
        publisher = Publisher(kafka, topics.actions, topics.audit, settings.kafka_send_timeout_s)
        applied = AppliedWaiter(redis, f"{settings.redis_prefix}:applied")
        scripts = ScriptBatcher(redis)  # one pipeline at a time for every script ingest runs
        tickets = TicketStore(redis, settings.redis_prefix, scripts)
        limiter = RateLimiter(redis, settings.redis_prefix, scripts)
        publisher.start()
        applied.start()
        try:
            yield Ports(
                settings=settings,
                catalog=catalog,
                topics=topics,
                verifier=verifier,
                service=IngestService(settings, catalog, tickets, publisher, applied, limiter),
                limiter=limiter,
                publisher=publisher,
                client_ip=ClientIpResolver(settings.trusted_proxies),
                redis=redis,
                kafka=kafka,
            )
        finally:
            await applied.stop()
            await publisher.stop()


async def readiness(ports: Ports | None) -> dict[str, str]:
    """/readyz: Redis answers a ping, Kafka knows the actions topic ("ok", or why not)."""
    if ports is None:
        return {"redis": "error: not started", "kafka": "error: not started"}
    checks = {"redis": "ok", "kafka": "ok"}
    try:
        await asyncio.wait_for(ports.redis.ping(), 2)
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    try:
        await asyncio.wait_for(ports.kafka.partitions_for(ports.topics.actions), 3)
    except Exception as exc:
        checks["kafka"] = f"error: {type(exc).__name__}"
    return checks
