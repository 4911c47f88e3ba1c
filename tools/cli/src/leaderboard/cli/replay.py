"""Rebuild the projections from the log, and Redis from Postgres.

``replay``: stop the scorers first. It empties the Postgres projection (actions, users and every
board's entries) and every board's Redis keys, then reads ``leaderboard.actions.v1`` from the beginning
of every partition up to the offsets that were the end when it started, through the same
:class:`Projector` the scorer uses (opened by the scorer's ``bootstrap``), so the result equals what
the scorer would have built: same dedupe, same tie-break times, every board of the catalog in every
period (periods come from each event's acceptedAt). A board added to the catalog is filled this way.
``rebuild_cache``: Redis only, from Postgres (for a flushed or lost Redis): every board period the
boards keep.
"""

from __future__ import annotations

import logging

from aiokafka import TopicPartition
from redis.asyncio import Redis

from leaderboard.common.kafka import ensure_topics, new_consumer
from leaderboard.common.topics import Topics
from leaderboard.scorer.bootstrap import bootstrap
from leaderboard.scorer.domain import Record
from leaderboard.scorer.settings import ScorerSettings

log = logging.getLogger(__name__)


async def _clear_boards(settings: ScorerSettings, redis: Redis) -> int:
    """Delete every key of every board and period (``{prefix}:board:*``, see ``boardkeys``)."""
    keys = [k async for k in redis.scan_iter(match=f"{settings.redis_prefix}:board:*", count=1000)]
    for i in range(0, len(keys), 1000):
        await redis.delete(*keys[i : i + 1000])
    return len(keys)


async def rebuild_cache(settings: ScorerSettings) -> int:
    await ensure_topics(settings)
    async with bootstrap(settings) as ports:
        await _clear_boards(settings, ports.redis)
        changes = await ports.projector.rebuild_all()
        await ports.projector.roll_over()
        change = changes.get((settings.board, "all"))
        return change.version if change else 0


async def replay(settings: ScorerSettings, batch_size: int = 5000) -> dict[str, int]:
    topic = Topics(settings.topic_prefix).actions
    totals = {"records": 0, "applied": 0, "duplicates": 0, "dead_lettered": 0}
    await ensure_topics(settings)
    async with bootstrap(settings) as ports:
        async with ports.pool.acquire() as conn:
            await conn.execute("TRUNCATE actions, users, board_entries")
        await _clear_boards(settings, ports.redis)
        projector = ports.projector
        await projector.rebuild_all()
        consumer = new_consumer(settings, group_id=None)
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            listed = await consumer.end_offsets(tps)
            # Tansu's ListOffsets can answer with the last batch's base offset + 1 instead of the
            # high watermark, so the end of each partition is fixed by the first fetch response's
            # high watermark (never below what ListOffsets said).
            end: dict[TopicPartition, int] = {}
            remaining = {tp for tp in tps if listed[tp] > 0}
            while remaining:
                fetched = await consumer.getmany(*remaining, timeout_ms=1000, max_records=batch_size)
                for tp in remaining:
                    if tp not in end and consumer.highwater(tp) is not None:
                        end[tp] = max(listed[tp], consumer.highwater(tp) or 0)
                records = []
                for tp, msgs in fetched.items():
                    limit = end.get(tp, listed[tp])
                    records += [
                        Record(m.topic, m.partition, m.offset, m.key, m.value)
                        for m in msgs
                        if m.offset < limit
                    ]
                for tp in list(remaining):
                    if tp in end and await consumer.position(tp) >= end[tp]:
                        remaining.discard(tp)
                if records:
                    result = await projector.process(records)
                    totals["records"] += len(records)
                    totals["applied"] += result.applied
                    totals["duplicates"] += result.duplicates
                    totals["dead_lettered"] += result.dead_lettered
        finally:
            await consumer.stop()
        await projector.ensure_board()  # current periods no replayed event fed: open and empty
        await projector.roll_over()
    return totals
