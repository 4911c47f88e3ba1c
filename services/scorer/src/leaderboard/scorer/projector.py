"""Applies batches of ``leaderboard.actions.v1`` records to Postgres and Redis, then announces
top-N changes. Used by the Faust agent, by ``leaderboard replay`` and by the benchmark baseline,
so every path projects the log the same way.

Order per batch (each step durable before the next; offsets are committed by the caller after):
  1. decode; undecodable records go to the DLQ (awaited), each with an audit event;
  2. one Postgres transaction, idempotent by actionId, returning absolute scores. When Postgres
     refuses the batch because of a record's own data (``projection.record_caused``: a data
     exception, a broken constraint, a program limit), the batch is bisected: each half is applied
     in its own transaction, down to the single records that Postgres refuses, which go to the DLQ
     with the store's error and an audit event (``record_dead_lettered``). Every other record is
     applied, in log order, so caps and ties decide as they would have. Any other failure is
     raised for the caller to retry;
  3. Redis: set those absolute scores and compare the top N in one script;
  4. if the top changed: BoardChanged to leaderboard.changes.v1 (awaited), version recorded in Postgres;
  5. a pub/sub notice of the new scores for ``?wait=true`` callers;
  6. audit events for newly quarantined actions (velocity caps), marked as sent in Postgres.
A crash anywhere repeats the batch on redelivery, which is harmless: step 2 inserts nothing
twice and steps 3-5 write absolute state; step 6 is retried from the ``audited_at IS NULL`` rows
at the next start (at-least-once). Dead letters are at-least-once too: a crash after a DLQ send
and before the offset commit isolates the same record again and sends its letter (and audit
event) a second time; readers of the DLQ dedupe by (topic, partition, offset).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis

from leaderboard.common.catalog import Catalog
from leaderboard.common.events import BoardChanged, DeadLetter, SecurityEvent, iso_ms, now_ms
from leaderboard.common.ranking import changed_entries, ranked_entries
from leaderboard.common.topics import Topics
from leaderboard.scorer import domain
from leaderboard.scorer.adapters import projection
from leaderboard.scorer.adapters.board import NoEpoch, RedisBoard
from leaderboard.scorer.domain import TopChange
from leaderboard.scorer.health import BATCH_FAILURES
from leaderboard.scorer.settings import FaultPoint, ScorerSettings

log = logging.getLogger(__name__)
# outcome: applied | duplicate | quarantined | dead_letter. rate(scorer_events_total[1m]) is events/s.
EVENTS = Counter("scorer_events_total", "Records processed", ["outcome"])
BATCH_SIZE = Histogram(
    "scorer_batch_size", "Records per batch", buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000)
)
BATCH_SECONDS = Histogram("scorer_batch_seconds", "Time to apply one batch")
BOARD_VERSION = Gauge("scorer_board_version", "Last published board version")


@dataclass
class BatchResult:
    applied: int
    duplicates: int
    dead_lettered: int
    change: TopChange | None
    quarantined: int = 0


class Projector:
    def __init__(
        self, settings: ScorerSettings, pool: asyncpg.Pool, redis: Redis, producer: AIOKafkaProducer
    ) -> None:
        self.settings = settings
        self.pool, self.redis, self.producer = pool, redis, producer
        self.topics = Topics(settings.topic_prefix)
        self.board = RedisBoard(redis, settings.redis_prefix, settings.board, settings.board_top_n)
        self.caps = cap_policy(settings)
        self._batches = 0
        self._pending: TopChange | None = None

    def fault(self, point: FaultPoint) -> None:
        """Test hook: die hard at ``point`` once (the marker file remembers that it happened)."""
        s = self.settings
        if s.fault_point != point or s.fault_marker is None or s.fault_marker.exists():
            return
        if self._batches <= s.fault_after_batches:  # this many batches complete first
            return
        s.fault_marker.write_text(point)
        log.warning("fault injection: exiting at %s", point)
        os._exit(70)

    async def ensure_board(self) -> None:
        """Start-up check: rebuild Redis from Postgres when the board is missing (flushed or new)."""
        if not await self.board.has_epoch():
            await self.rebuild()

    async def announce_unsent(self) -> TopChange | None:
        """Start-up check: a crash between the Redis write and the BoardChanged send leaves Redis's
        version ahead of the one recorded in Postgres; announce that top now (every entry marked as
        changed, since the previous top is not known any more)."""
        current = await self.board.published()
        if current is None:
            return None
        async with self.pool.acquire() as conn:
            _, sent = await projection.board_state(conn, self.settings.board)
        if current.version <= sent:
            return None
        log.warning("announcing board version %d that a crash kept from going out", current.version)
        await self._announce(current)
        return current

    async def rebuild(self) -> TopChange | None:
        async with self.redis.lock(self.board.keys.rebuild_lock, timeout=120, blocking_timeout=120):
            if await self.board.has_epoch():
                return None
            epoch = uuid.uuid4().hex[:12]
            async with self.pool.acquire() as conn:
                version = await projection.new_epoch(conn, self.settings.board, epoch)
                rows = await projection.all_scores(conn)
            await self.board.rebuild(rows, epoch, version)
            log.info(
                "rebuilt board %s from Postgres: %d users, epoch %s", self.settings.board, len(rows), epoch
            )
        change = await self.board.apply([])
        if change is not None:
            await self._announce(change)
        return change

    async def process(self, records: Sequence[domain.Record]) -> BatchResult:
        self._batches += 1
        BATCH_SIZE.observe(len(records))
        self.fault("after_fetch")
        with BATCH_SECONDS.time():
            good, bad = domain.decode_batch(records)
            if bad:
                await self._dead_letter(bad)
            unique, repeats = domain.first_occurrences(good)
            applied, refused = await self._apply_isolating(unique)
            if refused:
                await self._dead_letter(refused)
                gone = {r.record for r in refused}
                unique = [d for d in unique if d.record not in gone]
            self.fault("after_postgres")
            change = await self._apply_redis(applied.rows)
            self.fault("after_redis")
            # Kept until sent, so that a retried batch still announces what its first attempt changed.
            self._pending = domain.merge_changes(self._pending, change)
            if self._pending is not None:
                await self._announce(self._pending)
                change, self._pending = self._pending, None
            if applied.rows:
                await self._notify_applied(unique, applied.rows)
            if applied.quarantined:
                await self.audit_quarantine()
        quarantined = len(applied.quarantined)
        duplicates = repeats + len(unique) - applied.inserted - quarantined
        EVENTS.labels("applied").inc(applied.inserted)
        EVENTS.labels("duplicate").inc(duplicates)
        EVENTS.labels("quarantined").inc(quarantined)
        EVENTS.labels("dead_letter").inc(len(bad) + len(refused))
        self.fault("before_commit")
        return BatchResult(applied.inserted, duplicates, len(bad) + len(refused), change, quarantined)

    async def audit_quarantine(self) -> int:
        """Emit a SecurityEvent for every quarantined action not yet audited; returns how many."""
        sent = 0
        while True:
            async with self.pool.acquire() as conn:
                rows = await projection.unaudited_quarantine(conn)
            if not rows:
                return sent
            futures = []
            for r in rows:
                event = SecurityEvent(
                    kind="action_quarantined",
                    user_id=str(r["user_id"]),
                    detail={
                        "actionId": str(r["action_id"]),
                        "actionType": r["action_type"],
                        "points": r["points"],
                        "acceptedAt": iso_ms(r["accepted_at"]),
                        "reason": r["reason"],
                    },
                    at=now_ms(),
                )
                futures.append(
                    await self.producer.send(
                        self.topics.audit, event.to_bytes(), key=str(r["user_id"]).encode()
                    )
                )
            await asyncio.gather(*futures)
            async with self.pool.acquire() as conn:
                await projection.mark_audited(conn, [r["action_id"] for r in rows])
            sent += len(rows)

    async def _apply_postgres(self, unique: list[domain.Decoded]) -> projection.Applied:
        for attempt in range(5):
            try:
                async with self.pool.acquire() as conn:
                    return await projection.apply_batch(conn, unique, self.caps)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                await asyncio.sleep(0.05 * (attempt + 1))
        async with self.pool.acquire() as conn:
            return await projection.apply_batch(conn, unique, self.caps)

    async def _apply_isolating(
        self, items: list[domain.Decoded]
    ) -> tuple[projection.Applied, list[domain.Rejected]]:
        """Apply ``items``; when Postgres refuses them because of a record, bisect down to the records
        it refuses alone and return those instead of raising. Halves go in log order, each in its own
        transaction, so a refused record costs about 2*log2(batch) transactions."""
        try:
            return await self._apply_postgres(items), []
        except Exception as exc:
            if not projection.record_caused(exc):
                raise
            if len(items) == 1:
                error = projection.describe(exc)
                return projection.Applied([], 0), [domain.Rejected(items[0].record, error, items[0].event)]
            BATCH_FAILURES.labels("record").inc()
            log.warning(
                "Postgres refused a batch of %d because of a record; isolating it: %s", len(items), exc
            )
        mid = len(items) // 2
        first, refused_first = await self._apply_isolating(items[:mid])
        then, refused_then = await self._apply_isolating(items[mid:])
        return first.then(then), refused_first + refused_then

    async def _apply_redis(self, rows: list[domain.ScoreRow]) -> TopChange | None:
        try:
            return await self.board.apply(rows)
        except NoEpoch:
            log.warning("board missing from Redis; rebuilding from Postgres")
            await self.rebuild()  # includes this batch: Postgres already committed it
            return await self.board.apply(rows)

    async def _announce(self, change: TopChange) -> None:
        old, new = ranked_entries(change.old), ranked_entries(change.new)
        event = BoardChanged(
            board=self.settings.board,
            epoch=change.epoch,
            version=change.version,
            top=new,
            changed=changed_entries(old, new),
            at=now_ms(),
        )
        await self.producer.send_and_wait(
            self.topics.changes, event.to_bytes(), key=self.settings.board.encode()
        )
        async with self.pool.acquire() as conn:
            await projection.record_version(conn, self.settings.board, change.version)
        BOARD_VERSION.set(change.version)

    async def _dead_letter(self, bad: list[domain.Rejected]) -> None:
        """Each record to the DLQ with its raw bytes and error, and an audit event naming it."""
        futures = []
        for item in bad:
            r = item.record
            key = r.key or b"undecodable"
            letter = DeadLetter.of(r.topic, r.partition, r.offset, r.key, r.value, item.error)
            futures.append(await self.producer.send(self.topics.dlq, letter.to_bytes(), key=key))
            audit = SecurityEvent(
                kind="record_dead_lettered",
                user_id=str(item.event.user_id) if item.event else None,
                detail={
                    "topic": r.topic,
                    "partition": r.partition,
                    "offset": r.offset,
                    "actionId": str(item.event.action_id) if item.event else None,
                    "error": item.error[:2000],
                },
                at=now_ms(),
            )
            futures.append(await self.producer.send(self.topics.audit, audit.to_bytes(), key=key))
            log.warning("dead-lettered %s[%d]@%d: %s", r.topic, r.partition, r.offset, item.error[:200])
        await asyncio.gather(*futures)

    async def _notify_applied(self, unique: list[domain.Decoded], rows: list[domain.ScoreRow]) -> None:
        scores = {r.user_id: r.score for r in rows}
        notice = {
            str(d.event.action_id): scores[str(d.event.user_id)]
            for d in unique
            if str(d.event.user_id) in scores
        }
        if notice:
            await self.redis.publish(f"{self.settings.redis_prefix}:applied", json.dumps(notice))


def cap_policy(settings: ScorerSettings) -> domain.CapPolicy:
    """LEADERBOARD_VELOCITY_CAPS for every source, plus, unless LEADERBOARD_SERVICE_CAPS=off, the
    catalog's per-hour caps for game-backend (service) events, which ingest does not pace."""
    service: dict[str, domain.VelocityCap] = {}
    if settings.service_caps == "catalog":
        catalog = Catalog.load(settings.catalog_file)
        service = domain.catalog_caps({t: spec.per_hour for t, spec in catalog.actions.items()})
    return domain.CapPolicy(domain.velocity_caps(settings.velocity_caps), service)
