"""The scorer's announcements on both paths (issue 12), through the running scorer: every
``BoardChanged`` record it sends to the changes topic goes out on the Redis channel
``{prefix}:changes`` too, as the same bytes; a batch that changes several boards announces each
changed board period once; Postgres's ``boards`` table then holds each announced version."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis

from leaderboard.common.boardkeys import changes_channel
from leaderboard.common.boards import BoardCatalog
from leaderboard.common.events import BoardChanged, decode_board_changed

if TYPE_CHECKING:  # pytest imports conftest itself (importlib mode); mypy knows it by path
    from services.scorer.tests.integration.conftest import Kit

CATALOG = BoardCatalog.load()


def period_of(board: str, at: datetime) -> str:
    found = CATALOG.boards[board].period_at(at)
    assert found is not None
    return found.id


class Listener:
    """Everything published on the changes channel from the moment it is subscribed."""

    def __init__(self, redis: Redis, channel: str) -> None:
        self.redis = redis
        self.pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self.channel = channel
        self.heard: list[bytes] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.pubsub.subscribe(self.channel)
        self._task = asyncio.create_task(self._listen())
        # Subscribed before the scorer starts: nothing it publishes goes unheard.
        for _ in range(100):
            if dict(await self.redis.pubsub_numsub(self.channel)).get(self.channel.encode()) == 1:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no subscription to {self.channel}")

    async def _listen(self) -> None:
        async for message in self.pubsub.listen():
            self.heard.append(message["data"])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped


@pytest.fixture
async def listener(kit: Kit) -> AsyncIterator[Listener]:
    redis = Redis.from_url(kit.settings.redis_url)
    heard = Listener(redis, changes_channel(kit.settings.redis_prefix))
    await heard.start()
    try:
        yield heard
    finally:
        await heard.stop()
        await redis.aclose()


async def both_paths_agree(kit: Kit, listener: Listener) -> list[bytes]:
    """The changes topic, once it holds as many records as the channel carried and they are equal,
    byte for byte and in the same order."""
    topic: list[bytes] = []

    async def same() -> bool:
        nonlocal topic
        topic = await kit.read_topic(kit.topics.changes, within=5)
        return bool(topic) and topic == listener.heard

    await kit.eventually(
        same, 30, lambda: f"the topic's {len(topic)} records to equal the channel's {len(listener.heard)}"
    )
    return topic


async def test_every_announced_record_goes_out_on_the_channel_as_the_same_bytes(
    kit: Kit, listener: Listener
) -> None:
    kit.start()
    # One action of a match_won feeds every board of the default catalog: one batch, four changes.
    ada = uuid.uuid4()
    first = kit.action(ada, 250, action_type="match_won", username="ada")
    await kit.produce([first])
    day, week = period_of("daily", first.accepted_at), period_of("weekly", first.accepted_at)
    expected = {("global", "all"), ("daily", day), ("weekly", week), ("best-match", "all")}

    def of_first(records: list[BoardChanged]) -> list[BoardChanged]:
        return [r for r in records if ada in r.changed]

    async def announced() -> bool:
        return len(of_first([decode_board_changed(raw) for raw in listener.heard])) >= len(expected)

    await kit.eventually(announced, 30, "the first action's announcements on the channel")

    # Then more, from other users, under ada's 250 (so that ada's entry does not change again): some
    # only feed the sum boards (quest), some best-match too.
    others = [uuid.uuid4() for _ in range(6)]
    more = [
        kit.action(u, 20 + 10 * i, action_type="match_won" if i % 2 else "quest")
        for i, u in enumerate(others)
    ]
    more += [kit.action(others[0], 30, action_type="match_won"), kit.action(others[1], 15)]
    await kit.produce(more)

    async def applied() -> bool:
        return await kit.applied_count() == 1 + len(more)

    await kit.eventually(applied, 30, "every action applied")
    raws = await both_paths_agree(kit, listener)
    records = [decode_board_changed(raw) for raw in raws]

    # The first batch: one record per board period it changed, each with ada's entry.
    firsts = of_first(records)
    assert sorted((r.board, r.period) for r in firsts) == sorted(expected)
    for r in firsts:
        assert [(e.user_id, e.score) for e in r.top][:1] == [(ada, 250)], (r.board, r.period)

    # Every board period: versions strictly increase within an epoch (no change announced twice).
    seen: dict[tuple[str, str, str], int] = {}
    for r in records:
        key = (r.board, r.period, r.epoch)
        assert r.version > seen.get(key, 0), (key, r.version, seen.get(key))
        seen[key] = r.version
    assert {(b, p) for b, p, _ in seen} >= expected
    last = {(r.board, r.period): (r.epoch, r.version) for r in records}  # the latest of each

    # Each board period's final top, as announced, is the board.
    assert [(str(e.user_id), e.score) for e in records_of(records, "global", "all")[-1].top] == (
        await kit.entries("global")
    )[:10]
    assert [(str(e.user_id), e.score) for e in records_of(records, "best-match", "all")[-1].top] == (
        await kit.entries("best-match")
    )[:10]

    # Postgres records each announced version (after the sends: it may trail the channel a little).
    async def recorded() -> bool:
        conn = await kit.pg()
        try:
            rows = await conn.fetch("SELECT board, period, epoch, version FROM boards")
        finally:
            await conn.close()
        stored = {(r["board"], r["period"]): (r["epoch"], int(r["version"])) for r in rows}
        return all(stored.get(key) == value for key, value in last.items())

    await kit.eventually(recorded, 10, lambda: f"the boards table to hold {last}")


def records_of(records: list[BoardChanged], board: str, period: str) -> list[BoardChanged]:
    return [r for r in records if (r.board, r.period) == (board, period)]
