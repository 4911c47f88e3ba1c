"""Feeds the hub from ``leaderboard.changes.v1``.

Every broadcaster instance must see every change, so there is no consumer group: each instance
assigns itself the topic's partitions and starts at the end. The initial state comes from Redis
*after* the consumer is positioned, so nothing published in between is missed; stale messages are
ignored by the hub's version check. A periodic reconciliation against Redis covers anything the
feed might miss (a broker hiccup), so clients converge on the latest state regardless.

An instance may start before anything created the topics (a fresh deployment, the broadcaster up
first): the feed creates them itself (``ensure_topics``, idempotent), and while the topic's
partitions are unknown it asks the consumer's own client to track the topic and refresh its
metadata. ``consumer.topics()`` would not do: it fetches metadata without adopting it, so the
consumer would learn of the topic only at aiokafka's periodic refresh (5 minutes).

Live path (issue 12): the scorer repeats each record it announced, the same bytes, on a Redis
pub/sub channel (``boardkeys.changes_channel``) as it sends it to the topic (Redis's board already
shows the change by then). The feed applies
both copies through the same code; the hub keeps the newer version, so the second copy of a change
is a no-op and a pub/sub message lost in a reconnect only costs the topic's fetch delay. The
embedded broker answers a waiting fetch late (it does not wake it when a record arrives): the pub/sub
copy takes that wait, about half of the end-to-end delay, off the path from a write to its frame.

Periods (issue 10): the hub holds one state per board, the board's current period
(``domain.BoardPeriods``). An announcement of another period is ignored (a late one after a
rollover; past periods are read over REST), an announcement of a later period moves the board to it
(the scorer rolled over: its new epoch reaches live clients as a snapshot). The reconciliation also
reads each windowed board's ``current-period`` key, so an instance that missed the rollover's
announcement follows the scorer too. :attr:`ChangeFeed.following` says which period the hub's state
of a board belongs to (the hot read path checks it). Entries get ``sharedRank`` here, once per
change, so every frame and hub-served page carries it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError

from leaderboard.broadcaster.adapters.reads import BoardReader
from leaderboard.broadcaster.domain import BoardPeriods, with_shared_ranks
from leaderboard.broadcaster.hub import BoardState, Hub
from leaderboard.common.boardkeys import changes_channel
from leaderboard.common.boards import BoardCatalog
from leaderboard.common.events import decode_board_changed
from leaderboard.common.kafka import ensure_topics, new_consumer, stop_consumer
from leaderboard.common.settings import CommonSettings

log = logging.getLogger(__name__)
SEEN_RECORDS = 256  # a few seconds of changes across every board and period


class ChangeFeed:
    def __init__(
        self,
        settings: CommonSettings,
        topic: str,
        boards: list[str],
        hub: Hub,
        reader: BoardReader,
        reconcile_interval_s: float,
        periods: BoardPeriods | None = None,
    ) -> None:
        self.settings, self.topic, self.boards, self.hub, self.reader = settings, topic, boards, hub, reader
        self.reconcile_interval_s = reconcile_interval_s
        self.periods = periods or BoardPeriods(BoardCatalog.load(settings.boards_file), boards)
        self.following: dict[str, tuple[str, str]] = {}  # board -> (epoch, period) of the hub's state
        self.ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # The last records applied, as bytes: the second copy of a change (topic after pub/sub, or
        # the reverse) is recognised before it is decoded again (the fan-out profile saw both decoded).
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._consume(), name="changes-feed"),
            asyncio.create_task(self._reconcile(), name="changes-reconcile"),
            asyncio.create_task(self._follow_redis(), name="changes-pubsub"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _consume(self) -> None:
        while True:
            consumer = new_consumer(self.settings, group_id=None, auto_offset_reset="latest")
            try:
                await ensure_topics(self.settings, attempts=1)  # a failure retries below, after 1 s
                await consumer.start()
                partitions = await self._partitions(consumer)
                tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
                consumer.assign(tps)
                await consumer.seek_to_end(*tps)
                for tp in tps:
                    await consumer.position(tp)
                await self._load_from_redis()
                self.ready.set()
                while True:
                    batch = await consumer.getmany(timeout_ms=1000, max_records=1000)
                    for records in batch.values():
                        for record in records:
                            self._apply(record.value)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("change feed interrupted (%s); reconnecting", exc)
                await asyncio.sleep(1)
            finally:
                await stop_consumer(consumer)

    async def _follow_redis(self) -> None:
        """Apply the scorer's pub/sub copy of each change (see the module docstring)."""
        channel = changes_channel(self.settings.redis_prefix)
        while True:
            try:
                async with self.reader.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(channel)
                    async for message in pubsub.listen():
                        self._apply(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("board-change subscription lost (%s); resubscribing", exc)
                await asyncio.sleep(1)

    async def _partitions(self, consumer: AIOKafkaConsumer) -> set[int]:
        """The topic's partitions, once the consumer's metadata knows them."""
        while not (partitions := consumer.partitions_for_topic(self.topic)):
            # aiokafka has no public call that updates the consumer's own metadata: track the topic
            # on its client (which refreshes now), rather than topics(), which adopts nothing.
            await asyncio.wait_for(consumer._client.add_topic(self.topic), 5)
            await asyncio.sleep(0.1)
        return set(partitions)

    def _apply(self, raw: bytes) -> None:
        if raw in self._seen:
            return
        self._seen[raw] = None
        if len(self._seen) > SEEN_RECORDS:
            self._seen.popitem(last=False)
        try:
            change = decode_board_changed(raw)
        except (ValueError, ValidationError) as exc:
            log.warning("ignoring an undecodable board change: %s", exc)
            return
        if change.board not in self.boards or not self.periods.observe(change.board, change.period):
            return
        top = with_shared_ranks([e.model_dump(mode="json", by_alias=True) for e in change.top])
        self._publish(BoardState(change.board, change.epoch, change.version, top), change.period)

    def _publish(self, state: BoardState, period: str) -> bool:
        adopted = self.hub.publish(state)
        if adopted:
            self.following[state.board] = (state.epoch, period)
        return adopted

    def period_of(self, state: BoardState) -> str | None:
        """The period the hub's ``state`` belongs to (None: not one this feed published)."""
        epoch, period = self.following.get(state.board, ("", ""))
        return period if epoch == state.epoch else None

    async def refresh(self, board: str) -> bool:
        """Adopt Redis's state of ``board``'s current period if it is newer than ours (Redis is
        written before the change is published, so it is never behind the topic)."""
        spec = self.periods.spec(board)
        if spec.window != "all":
            announced = await self.reader.current_period(board)
            if announced is not None:
                self.periods.observe(board, announced)
        period = self.periods.current(board)
        if period is None:
            return False
        meta = await self.reader.meta(board, period.id)
        if meta is None or not meta.top_known:
            return False
        top = self.reader.top_entries(meta, spec.ascending)
        return self._publish(BoardState(board, meta.epoch, meta.version, top), period.id)

    async def _load_from_redis(self) -> None:
        for board in self.boards:
            await self.refresh(board)

    async def _reconcile(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval_s)
            try:
                await self._load_from_redis()
            except Exception as exc:
                log.warning("reconciliation with Redis failed: %s", exc)
