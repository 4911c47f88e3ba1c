"""The scorer's lease in Redis: the sign, for ``leaderboard replay``, that a scorer runs on these stores."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from redis.asyncio import Redis

from leaderboard.scorer.settings import ScorerSettings

log = logging.getLogger(__name__)


def lease_pattern(prefix: str) -> str:
    return f"{prefix}:scorer:lease:*"


class Lease:
    """This scorer's Redis lease (``{prefix}:scorer:lease:{host}:{pid}``, value: the group), renewed
    every third of ``scorer_lease_s``: ``leaderboard replay`` into the live stores refuses to run
    while one exists. Chosen over the consumer-group API (DescribeGroups) so that it works the same on
    the embedded broker and on real Kafka, and is released the moment the scorer stops."""

    def __init__(self, redis: Redis, settings: ScorerSettings) -> None:
        self.redis = redis
        self.key = f"{settings.redis_prefix}:scorer:lease:{socket.gethostname()}:{os.getpid()}"
        self.value = settings.scorer_group
        self.ttl_ms = int(settings.scorer_lease_s * 1000)

    async def take(self) -> None:
        await self.redis.set(self.key, self.value, px=self.ttl_ms)

    async def keep(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            try:
                await self.take()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("renewing the scorer lease failed; trying again", exc_info=True)

    async def release(self) -> None:
        await self.redis.delete(self.key)
