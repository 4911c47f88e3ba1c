"""The scorer benchmark's baseline: a plain aiokafka consumer loop doing the scorer's own SQL and
Redis work (the same :class:`Projector` the Faust agent calls), committing offsets after each batch.

Run it with ``python -m leaderboard.cli.bench.plain_scorer`` (settings from ``LEADERBOARD_*``, the
scorer's own). ``LEADERBOARD_BATCH_SIZE=1`` turns it into the naive one-event-per-transaction loop.
The difference to the Faust scorer is the stream machinery alone; SIGTERM ends it.
"""

from __future__ import annotations

import asyncio
import logging

from leaderboard.common.kafka import ensure_topics, new_consumer, producer
from leaderboard.common.logs import setup_logging
from leaderboard.common.postgres import postgres_pool
from leaderboard.common.redis import redis_client
from leaderboard.common.topics import Topics
from leaderboard.scorer.adapters.migrate import migrate
from leaderboard.scorer.domain import Record
from leaderboard.scorer.projector import Projector
from leaderboard.scorer.settings import ScorerSettings

log = logging.getLogger(__name__)


async def consume(settings: ScorerSettings) -> None:
    topic = Topics(settings.topic_prefix).actions
    await ensure_topics(settings)
    async with (
        postgres_pool(settings, max_size=4) as pool,
        redis_client(settings) as redis,
        producer(settings) as kafka,
    ):
        async with pool.acquire() as conn:
            await migrate(conn)
        projector = Projector(settings, pool, redis, kafka)
        await projector.ensure_board()
        # The group timings the Faust app uses. The request timeout matters on Tansu: with aiokafka's
        # default (40 s) its JoinGroup answers RequestTimedOut over and over; Faust sends 90 s.
        session_ms = int(settings.session_timeout_s * 1000)
        consumer = new_consumer(
            settings,
            topic,
            group_id=f"{settings.scorer_group}-plain",
            max_poll_records=settings.batch_size,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(500, session_ms // 10),
            rebalance_timeout_ms=max(10_000, session_ms * 2),
            request_timeout_ms=90_000,
        )
        await consumer.start()
        log.warning("plain consumer ready: batches of up to %d", settings.batch_size)
        try:
            while True:
                fetched = await consumer.getmany(
                    timeout_ms=int(settings.batch_within_s * 1000), max_records=settings.batch_size
                )
                records = [
                    Record(m.topic, m.partition, m.offset, m.key, m.value)
                    for messages in fetched.values()
                    for m in messages
                ]
                if records:
                    await projector.process(records)
                    await consumer.commit()
        finally:
            await consumer.stop()


def main() -> None:
    settings = ScorerSettings()
    setup_logging(settings.log_level, "plain-scorer")
    asyncio.run(consume(settings))


if __name__ == "__main__":
    main()
