"""redis-py asyncio client lifecycle."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from redis.asyncio import Redis

from leaderboard.common.settings import CommonSettings


def new_redis(settings: CommonSettings, **overrides: object) -> Redis:
    options: dict[str, object] = {
        "socket_timeout": 5,
        "socket_connect_timeout": 3,
        "health_check_interval": 15,
        "max_connections": 256,
    }
    options.update(overrides)
    return Redis.from_url(settings.redis_url, **options)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def redis_client(settings: CommonSettings, **overrides: object) -> AsyncIterator[Redis]:
    client = new_redis(settings, **overrides)
    try:
        yield client
    finally:
        await client.aclose()
