"""Waits for the scorer to apply an action (``?wait=true``).

The scorer publishes, once per batch, ``{actionId: newScore}`` on a Redis pub/sub channel. One
subscription per ingest process feeds futures keyed by actionId; a waiter registers before the
event is produced, so the notice cannot slip past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from redis.asyncio import Redis

log = logging.getLogger(__name__)


class AppliedWaiter:
    def __init__(self, redis: Redis, channel: str) -> None:
        self.redis, self.channel = redis, channel
        self._waiters: dict[str, asyncio.Future[int]] = {}
        self._task: asyncio.Task[None] | None = None

    def expect(self, action_id: str) -> asyncio.Future[int]:
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters[action_id] = fut
        return fut

    def forget(self, action_id: str) -> None:
        self._waiters.pop(action_id, None)

    async def wait(self, fut: asyncio.Future[int], timeout_s: float) -> int | None:
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except TimeoutError:
            return None

    def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="applied-listener")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while True:
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self.channel)
                    async for message in pubsub.listen():
                        if not self._waiters:
                            continue
                        for action_id, score in json.loads(message["data"]).items():
                            fut = self._waiters.pop(action_id, None)
                            if fut is not None and not fut.done():
                                fut.set_result(int(score))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("applied-notice subscription lost (%s); resubscribing", exc)
                await asyncio.sleep(1)
