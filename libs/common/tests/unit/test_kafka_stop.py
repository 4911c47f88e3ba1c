"""``stop_consumer``: aiokafka's re-raised fetch cancellation does not end the caller; the caller's own
cancellation still does."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer

from leaderboard.common.kafka import stop_consumer


class StopRaisesFetchCancellation:
    """What aiokafka's stop() does when its fetch task sat in its retry back-off."""

    def __init__(self) -> None:
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True
        fetch = asyncio.ensure_future(asyncio.sleep(10))
        await asyncio.sleep(0)
        fetch.cancel()
        await fetch  # re-raises the fetch task's CancelledError, as aiokafka's fetcher close does


async def test_the_fetch_tasks_cancellation_does_not_escape() -> None:
    consumer = StopRaisesFetchCancellation()
    await stop_consumer(cast(AIOKafkaConsumer, consumer))
    assert consumer.stopped


async def test_the_callers_own_cancellation_still_propagates() -> None:
    started = asyncio.Event()

    class Slow:
        async def stop(self) -> Any:
            started.set()
            await asyncio.sleep(10)

    task = asyncio.ensure_future(stop_consumer(cast(AIOKafkaConsumer, Slow())))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
