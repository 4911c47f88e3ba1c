"""aiokafka lifecycles: a durable producer, topic creation, and a consumer factory.

Every message is produced with a key (SPEC: actions by user, changes by board). Producers use
acks=all; idempotence follows the ``kafka_idempotence`` setting (Tansu lacks InitProducerId).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from leaderboard.common.settings import CommonSettings
from leaderboard.common.topics import Topics

log = logging.getLogger(__name__)
TOPIC_ALREADY_EXISTS = TopicAlreadyExistsError.errno


def topic_specs(settings: CommonSettings) -> dict[str, int]:
    """Topic name -> partition count. Changes stay on one partition so versions arrive in order."""
    topics = Topics(settings.topic_prefix)
    return {topics.actions: settings.actions_partitions, topics.changes: 1, topics.audit: 1, topics.dlq: 1}


async def ensure_topics(settings: CommonSettings, *, attempts: int = 30) -> None:
    """Create the topics if they are missing; safe to run from every service at start-up."""
    specs = topic_specs(settings)
    for attempt in range(attempts):
        admin = AIOKafkaAdminClient(**settings.kafka_client_options())
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(name, partitions, settings.topic_replication)
                for name, partitions in specs.items()
                if name not in existing
            ]
            if missing:
                response = await admin.create_topics(missing)
                for name, code, message in getattr(response, "topic_errors", []):
                    if code not in (0, TOPIC_ALREADY_EXISTS):
                        raise KafkaError(f"creating {name}: {code} {message}")
            return
        except (KafkaError, OSError) as exc:
            if attempt == attempts - 1:
                raise
            log.info("waiting for Kafka at %s (%s)", settings.kafka_bootstrap, exc)
            await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))
        finally:
            with contextlib.suppress(Exception):
                await admin.close()


@functools.lru_cache(maxsize=65_536)
def _key_hash(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def keyed_partitioner(key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
    """aiokafka's default partitioner (Java's murmur2 of the key, so every client puts a key on the
    same partition), with the hash of recent keys remembered: aiokafka's murmur2 is pure Python, a
    measurable share of a 1,000-event batch, and the same users come back. Unkeyed messages never
    reach it (every message here has a key); they keep aiokafka's random choice."""
    if key is None:
        return DefaultPartitioner()(key, list(all_partitions), list(available))  # type: ignore[no-any-return]
    return all_partitions[_key_hash(key) % len(all_partitions)]


def new_producer(settings: CommonSettings, **overrides: object) -> AIOKafkaProducer:
    options: dict[str, object] = {
        "partitioner": keyed_partitioner,
        **settings.kafka_client_options(),
        "acks": "all",
        "enable_idempotence": settings.kafka_idempotence,
        "linger_ms": 2,
        "max_batch_size": 1 << 20,
        "max_request_size": 4 << 20,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


@contextlib.asynccontextmanager
async def producer(settings: CommonSettings, **overrides: object) -> AsyncIterator[AIOKafkaProducer]:
    p = new_producer(settings, **overrides)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """``consumer.stop()``, except for one aiokafka quirk: when its fetch task sits in its retry
    back-off (the broker went away or restarted), ``stop()`` cancels that task and re-raises the
    task's CancelledError. The consumer is closed all the same and the cancellation is not the
    caller's, so it must not end the caller's loop; the caller's own cancellation still propagates."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


def new_consumer(
    settings: CommonSettings, *topics: str, group_id: str | None, **overrides: object
) -> AIOKafkaConsumer:
    options: dict[str, object] = {
        **settings.kafka_client_options(),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


def tune_faust_fetch_wait(fetch_max_wait_ms: int) -> None:
    """Faust's aiokafka driver builds its worker consumer with ``fetch_max_wait_ms=1500`` and no setting
    to change it; wrap the factory so the scorer uses :attr:`CommonSettings.kafka_fetch_max_wait_ms`."""
    from faust.transport.drivers import aiokafka as driver

    thread: Any = driver.AIOKafkaConsumerThread
    original = getattr(thread, "_leaderboard_original_factory", thread._create_worker_consumer)

    def create_worker_consumer(self: Any, transport: Any) -> AIOKafkaConsumer:
        consumer = original(self, transport)
        consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read when the consumer starts its fetcher
        return consumer

    thread._leaderboard_original_factory = original
    thread._create_worker_consumer = create_worker_consumer
