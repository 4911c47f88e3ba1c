"""The batch path's shortcuts (issue 12) on real stores: the board scripts go out in one Redis
pipeline by SHA, so a Redis that lost its scripts (SCRIPT FLUSH, a restart, a failover) must still
get every batch, through the one-by-one path that loads them again."""

from __future__ import annotations

import hashlib
import uuid
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from leaderboard.scorer.adapters.board import APPLY

if TYPE_CHECKING:  # pytest imports conftest itself (importlib mode); mypy knows it by path
    from services.scorer.tests.integration.conftest import Kit


async def test_batches_apply_after_redis_forgets_the_scripts(kit: Kit) -> None:
    users = [uuid.uuid4() for _ in range(4)]
    kit.start()
    await kit.produce([kit.action(u, 10 * (i + 1)) for i, u in enumerate(users)])

    async def shown(expected: list[tuple[str, int]]) -> bool:
        return await kit.redis_board() == expected

    first = sorted(((str(u), 10 * (i + 1)) for i, u in enumerate(users)), key=lambda x: -x[1])
    await kit.eventually(lambda: shown(first), 30, "the first events on the Redis board")

    sha = hashlib.sha1(APPLY.encode()).hexdigest()
    redis = Redis.from_url(kit.settings.redis_url)
    try:
        assert await redis.script_exists(sha) == [True]
        await redis.script_flush()
        assert await redis.script_exists(sha) == [False]

        await kit.produce([kit.action(users[0], 1000), kit.action(users[1], 5)])
        then = dict(first)
        then[str(users[0])] += 1000
        then[str(users[1])] += 5
        expected = sorted(then.items(), key=lambda x: -x[1])
        await kit.eventually(lambda: shown(expected), 30, "the events after SCRIPT FLUSH on the board")
        assert await kit.pg_board() == expected
        await kit.check_all_boards()  # every board period, not only the global one
        assert await redis.script_exists(sha) == [True]  # loaded again by the one-by-one path
    finally:
        await redis.aclose()
