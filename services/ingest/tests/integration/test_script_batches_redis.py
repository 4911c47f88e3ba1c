"""Script calls batched into shared pipelines (``adapters.batching``), on the real Redis (the session's,
under a fresh key prefix): each caller gets its own reply or error, in call order, with far fewer
pipelines than calls; a flushed script cache and an unreachable Redis are handled as a lone call would."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from leaderboard.ingest.adapters.batching import ScriptBatcher
from leaderboard.testkit.processes import free_port

# KEYS[1]: a list. ARGV[1]: a value to append, or 'fail' to raise. Replies the list's new length.
APPEND = """
if ARGV[1] == 'fail' then return redis.error_reply('refused ' .. KEYS[1]) end
return redis.call('RPUSH', KEYS[1], ARGV[1])
"""


class CountingBatcher(ScriptBatcher):
    """The batcher, counting the pipelines it sends and the calls in each."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(redis)
        self.pipelines: list[int] = []

    async def _execute(self, batch: list[Any]) -> list[Any]:
        self.pipelines.append(len(batch))
        return await super()._execute(batch)


async def test_concurrent_calls_share_pipelines_and_each_gets_its_own_reply_in_order(
    redis: Redis, prefix: str
) -> None:
    batcher = CountingBatcher(redis)
    script = redis.register_script(APPEND)
    await redis.script_load(APPEND)  # else the first pipeline is sent twice (see the next tests)
    key = f"{prefix}:list"
    replies = await asyncio.gather(*(batcher.call(script, [key], [str(i)]) for i in range(50)))
    # Every call ran once, in the order the calls were made, and answered its own caller.
    assert replies == list(range(1, 51))
    assert await redis.lrange(key, 0, -1) == [str(i).encode() for i in range(50)]
    # Calls made in the same turn of the loop left together.
    assert sum(batcher.pipelines) == 50 and len(batcher.pipelines) <= 2, batcher.pipelines
    # A lone call later goes out at once, alone.
    assert await batcher.call(script, [key], ["last"]) == 51
    assert batcher.pipelines[-1] == 1


async def test_a_failing_call_fails_alone(redis: Redis, prefix: str) -> None:
    batcher = CountingBatcher(redis)
    script = redis.register_script(APPEND)
    await redis.script_load(APPEND)
    values = ["a", "fail", "b"]
    results = await asyncio.gather(
        *(batcher.call(script, [f"{prefix}:{v}"], [v]) for v in values), return_exceptions=True
    )
    assert results[0] == 1 and results[2] == 1
    assert isinstance(results[1], ResponseError) and f"refused {prefix}:fail" in str(results[1])
    assert len(batcher.pipelines) == 1


async def test_scripts_redis_forgot_are_loaded_again(redis: Redis, prefix: str) -> None:
    batcher = CountingBatcher(redis)
    script: AsyncScript = redis.register_script(APPEND)
    key = f"{prefix}:list"
    assert await batcher.call(script, [key], ["x"]) == 1
    await redis.script_flush()  # what a restarted Redis knows
    batcher.pipelines.clear()
    replies = await asyncio.gather(*(batcher.call(script, [key], [str(i)]) for i in range(5)))
    assert replies == [2, 3, 4, 5, 6]
    assert await redis.script_exists(script.sha) == [True]
    # Refused as unknown, the calls were sent once more (and ran once: the replies above).
    assert batcher.pipelines == [5, 5]


async def test_a_cancelled_caller_leaves_the_others_their_replies(redis: Redis, prefix: str) -> None:
    batcher = CountingBatcher(redis)
    script = redis.register_script(APPEND)
    key = f"{prefix}:list"
    calls = [asyncio.ensure_future(batcher.call(script, [key], [str(i)])) for i in range(3)]
    await asyncio.sleep(0)  # the calls are queued
    calls[1].cancel()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[0] == 1 and isinstance(results[1], asyncio.CancelledError) and results[2] == 3
    # The cancelled call's script ran all the same (it was on its way): no reply is lost to another.
    assert await redis.lrange(key, 0, -1) == [b"0", b"1", b"2"]


async def test_an_unreachable_redis_fails_every_call_of_the_pipeline() -> None:
    client = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    try:
        batcher = ScriptBatcher(client)
        script = client.register_script(APPEND)
        results = await asyncio.gather(
            *(batcher.call(script, ["k"], [str(i)]) for i in range(4)), return_exceptions=True
        )
        assert all(isinstance(r, RedisConnectionError) for r in results), results
        # And the batcher is not stuck: the next call is tried (and fails) too.
        with pytest.raises(RedisConnectionError):
            await batcher.call(script, ["k"], ["again"])
    finally:
        await client.aclose()
