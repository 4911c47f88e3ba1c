"""Applies batches of ``leaderboard.actions.v1`` records to Postgres and Redis, then announces
top-N changes. Used by the Faust agent, by ``leaderboard replay`` and by the benchmark baseline,
so every path projects the log the same way.

Boards (issue 10): every board of the catalog (``leaderboard.common.boards``) is projected in the same
transaction; Redis holds one board per board and period (only the periods the board keeps), each
with its own epoch, and each announces its own ``BoardChanged`` (with ``period``). Changes to a past
period (a late event, a replay) are stored but not announced: live clients follow the current one.
The scorer's clock (``clock``, shifted by ``LEADERBOARD_CLOCK_OFFSET_S`` in tests) decides only which
period is current, for announcements, the rollover and Redis's expiry; which period an event feeds
is decided by its ``acceptedAt``. :meth:`Projector.roll_over` opens a board's new period at its
boundary (called by the worker's periodic task): a new epoch, announced with its empty top.

Corrections (issue 11) share the actions topic: the batch is cut at each correction
(``domain.segments``), so the actions before it are applied first; each correction then runs in its own
transaction (``adapters.corrections``, idempotent by correctionId), and the user's recomputed entries go
through steps 3-4 below like any change (a removed entry leaves the Redis board). With ``publish=False``
(a side-by-side replay) nothing is written to Kafka.

Order per run of actions (each step durable before the next; offsets are committed by the caller after):
  1. decode; undecodable records go to the DLQ (awaited), each with an audit event;
  2. one Postgres transaction, idempotent by actionId, returning absolute scores. When Postgres
     refuses the batch because of a record's own data (``projection.record_caused``: a data
     exception, a broken constraint, a program limit), the batch is bisected: each half is applied
     in its own transaction, down to the single records that Postgres refuses, which go to the DLQ
     with the store's error and an audit event (``record_dead_lettered``). Every other record is
     applied, in log order, so caps and ties decide as they would have. Any other failure is
     raised for the caller to retry;
  3. Redis: set those absolute scores and compare the top N in one script, per board and period;
  4. for each top that changed: BoardChanged to leaderboard.changes.v1 (awaited), version recorded in
     Postgres;
  5. a pub/sub notice of the new scores for ``?wait=true`` callers (sent beside step 4);
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
from datetime import UTC, datetime

import asyncpg
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from leaderboard.common.boardkeys import ALL_PERIOD, BoardKeys, changes_channel
from leaderboard.common.boards import (
    ALL_TIME,
    BoardCatalog,
    BoardSpec,
    Clock,
    Period,
    UnknownPeriod,
    system_clock,
)
from leaderboard.common.catalog import Catalog
from leaderboard.common.events import BoardChanged, DeadLetter, SecurityEvent, iso_ms, now_ms
from leaderboard.common.ranking import changed_entries, ranked_entries
from leaderboard.common.topics import Topics
from leaderboard.scorer import domain
from leaderboard.scorer.adapters import corrections, projection
from leaderboard.scorer.adapters.board import NoEpoch, RedisBoard
from leaderboard.scorer.domain import TopChange
from leaderboard.scorer.health import BATCH_FAILURES
from leaderboard.scorer.settings import FaultPoint, ScorerSettings

log = logging.getLogger(__name__)
# outcome: applied | duplicate | quarantined | dead_letter | correction. rate(scorer_events_total[1m]) is events/s.
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
    corrections: int = 0


PeriodKey = tuple[str, str]  # (board, period id)


class Projector:
    def __init__(
        self,
        settings: ScorerSettings,
        pool: asyncpg.Pool,
        redis: Redis,
        producer: AIOKafkaProducer,
        *,
        catalog: BoardCatalog | None = None,
        clock: Clock | None = None,
        publish: bool = True,
    ) -> None:
        self.settings = settings
        # False for a side-by-side replay: no BoardChanged, dead letter or audit event leaves it.
        self.publish = publish
        self.pool, self.redis, self.producer = pool, redis, producer
        self.topics = Topics(settings.topic_prefix)
        self.changes_channel = changes_channel(settings.redis_prefix)
        self.catalog = catalog or BoardCatalog.load(settings.boards_file)
        self.clock = clock or system_clock(settings.clock_offset_s)
        # Redis expires keys by its own (wall) clock: expiry times are moved by the clock's shift.
        self._shift_s = (self.clock() - datetime.now(UTC)).total_seconds()
        self.caps = cap_policy(settings)
        self._batches = 0
        self._boards: dict[PeriodKey, RedisBoard] = {}
        self._pending: dict[PeriodKey, TopChange] = {}
        self._opened: dict[str, str] = {}  # board -> the period roll_over opened last

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

    def redis_board(self, spec: BoardSpec, period: Period) -> RedisBoard:
        key = (spec.id, period.id)
        if key not in self._boards:
            expires = spec.expires_at(period)
            self._boards[key] = RedisBoard(
                self.redis,
                self.settings.redis_prefix,
                spec.id,
                self.settings.board_top_n,
                period.id,
                int(expires.timestamp() - self._shift_s) if expires else 0,
            )
        return self._boards[key]

    def _announced(self, spec: BoardSpec, period: Period) -> bool:
        return not spec.past(period, self.clock())

    async def live_periods(self) -> list[tuple[BoardSpec, Period]]:
        """Every period Redis should hold now: each board's current one and every period Postgres
        knows that its board still keeps."""
        now = self.clock()
        found: dict[PeriodKey, tuple[BoardSpec, Period]] = {}
        for spec in self.catalog:
            current = spec.current(now)
            if current is not None:
                found[(spec.id, current.id)] = (spec, current)
        async with self.pool.acquire() as conn:
            known = await projection.known_periods(conn)
        for board, period_id in known:
            listed = self.catalog.get(board)
            if listed is None:
                continue  # a board taken out of the catalog: its rows stay, nothing serves them
            try:
                period = listed.period(period_id)
            except UnknownPeriod:
                continue
            if listed.kept(period, now):
                found[(board, period_id)] = (listed, period)
        return list(found.values())

    async def ensure_board(self) -> None:
        """Start-up check: rebuild from Postgres every board period Redis should hold but lost (flushed
        or new)."""
        for spec, period in await self.live_periods():
            if not await self.redis_board(spec, period).has_epoch():
                await self.rebuild(spec.id, period)

    async def announce_unsent(self) -> TopChange | None:
        """Start-up check: a crash between the Redis write and the BoardChanged send leaves Redis's
        version ahead of the one recorded in Postgres; announce that top now (every entry marked as
        changed, since the previous top is not known any more). Returns the last one announced."""
        last = None
        for spec, period in await self.live_periods():
            if self._announced(spec, period):
                last = await self._announce_unsent(spec, period) or last
        return last

    async def _announce_unsent(self, spec: BoardSpec, period: Period) -> TopChange | None:
        current = await self.redis_board(spec, period).published()
        if current is None:
            return None
        async with self.pool.acquire() as conn:
            _, sent = await projection.board_state(conn, spec.id, period.id)
        if current.version <= sent:
            return None
        log.warning(
            "announcing version %d of %s/%s that a crash kept from going out",
            current.version,
            spec.id,
            period.id,
        )
        await self._announce({(spec.id, period.id): current})
        return current

    async def roll_over(self) -> list[PeriodKey]:
        """Open each windowed board's current period if this scorer has not yet: a new epoch, announced
        with its (empty) top, and the board's ``current-period`` key. Idempotent and safe on several
        replicas: the opening runs under the period's rebuild lock and only when Redis has no epoch for
        it, so one replica builds and announces it; the others find it open."""
        now = self.clock()
        opened = []
        for spec in self.catalog:
            period = spec.current(now) if spec.window != "all" else None
            if period is None or self._opened.get(spec.id) == period.id:
                continue
            if not await self.redis_board(spec, period).has_epoch():
                await self.rebuild(spec.id, period)
            await self._announce_unsent(spec, period)
            await self.redis.set(BoardKeys(self.settings.redis_prefix, spec.id).current_period, period.id)
            self._opened[spec.id] = period.id
            opened.append((spec.id, period.id))
            log.info("board %s: period %s is open", spec.id, period.id)
        return opened

    async def rebuild_all(self) -> dict[PeriodKey, TopChange | None]:
        """Rebuild every period Redis should hold (its keys must have been cleared first)."""
        return {
            (spec.id, period.id): await self.rebuild(spec.id, period)
            for spec, period in await self.live_periods()
        }

    async def rebuild(self, board: str | None = None, period: Period | None = None) -> TopChange | None:
        """Build one board period in Redis from Postgres under a new epoch, unless Redis has it (the
        default: the scorer's board, ``global``, in its current period)."""
        spec = self.catalog.boards[board or self.settings.board]
        period = period or spec.current(self.clock()) or ALL_TIME
        rb = self.redis_board(spec, period)
        async with self.redis.lock(rb.keys.rebuild_lock, timeout=120, blocking_timeout=120):
            if await rb.has_epoch():
                return None
            epoch = uuid.uuid4().hex[:12]
            async with self.pool.acquire() as conn:
                version = await projection.new_epoch(conn, spec.id, epoch, period)
                rows = await projection.board_entries(conn, spec.id, period.id, spec.ascending)
            await rb.rebuild(rows, epoch, version)
            log.info(
                "rebuilt board %s/%s from Postgres: %d users, epoch %s", spec.id, period.id, len(rows), epoch
            )
        change = await rb.apply([])
        if change is not None and self._announced(spec, period):
            await self._announce({(spec.id, period.id): change})
        return change

    async def process(self, records: Sequence[domain.Record]) -> BatchResult:
        self._batches += 1
        BATCH_SIZE.observe(len(records))
        self.fault("after_fetch")
        with BATCH_SECONDS.time():
            good, bad = domain.decode_log(records)
            if bad:
                await self._dead_letter(bad)
            total = BatchResult(0, 0, len(bad), None)
            for segment in domain.segments(good):
                if isinstance(segment, domain.Corrected):
                    part = await self._correct(segment)
                else:
                    part = await self._process_actions(segment)
                total = BatchResult(
                    total.applied + part.applied,
                    total.duplicates + part.duplicates,
                    total.dead_lettered + part.dead_lettered,
                    part.change or total.change,
                    total.quarantined + part.quarantined,
                    total.corrections + part.corrections,
                )
        EVENTS.labels("dead_letter").inc(len(bad))
        self.fault("before_commit")
        return total

    async def _process_actions(self, good: list[domain.Decoded]) -> BatchResult:
        """A run of actions (steps 2-6 of the module docstring)."""
        unique, repeats = domain.first_occurrences(good)
        applied, refused = await self._apply_isolating(unique)
        if refused:
            await self._dead_letter(refused)
            gone = {r.record for r in refused}
            unique = [d for d in unique if d.record not in gone]
        self.fault("after_postgres")
        changes = await self._apply_redis(applied.entries)
        self.fault("after_redis")
        # The notice for ``?wait=true`` callers goes out beside the announcement rather than after it
        # (one Redis round trip less per batch): the boards already show the new scores. It is
        # awaited either way, so no send outlives the batch, and its failure fails the batch as before.
        notice = asyncio.ensure_future(self._notify_applied(unique, applied.rows))
        try:
            change = await self._announce_pending(changes)
        finally:
            await asyncio.gather(notice, return_exceptions=True)
        notice.result()
        if applied.quarantined:
            await self.audit_quarantine()
        quarantined = len(applied.quarantined)
        duplicates = repeats + len(unique) - applied.inserted - quarantined
        EVENTS.labels("applied").inc(applied.inserted)
        EVENTS.labels("duplicate").inc(duplicates)
        EVENTS.labels("quarantined").inc(quarantined)
        EVENTS.labels("dead_letter").inc(len(refused))
        return BatchResult(applied.inserted, duplicates, len(refused), change, quarantined)

    async def _correct(self, item: domain.Corrected) -> BatchResult:
        """A correction (issue 11): its own transaction (idempotent by correctionId), then the user's
        recomputed entries into every Redis board period they are on, announced like any change.
        A correction that Postgres refuses because of its own data goes to the DLQ like an action."""
        try:
            async with self.pool.acquire() as conn:
                done = await corrections.apply_correction(conn, item, self.catalog)
        except Exception as exc:
            if not projection.record_caused(exc):
                raise
            await self._dead_letter([domain.Rejected(item.record, projection.describe(exc))])
            return BatchResult(0, 0, 1, None)
        changes = await self._apply_redis(done.entries)
        change = await self._announce_pending(changes)
        if done.applied:
            log.info(
                "%s %s for user %s by %s: %d action(s)",
                item.event.event_type,
                item.event.correction_id,
                item.event.user_id,
                item.event.by,
                done.affected,
            )
        EVENTS.labels("correction" if done.applied else "duplicate").inc()
        return BatchResult(0, 0 if done.applied else 1, 0, change, 0, 1 if done.applied else 0)

    async def audit_quarantine(self) -> int:
        """Emit a SecurityEvent for every quarantined action not yet audited; returns how many."""
        sent = 0
        while self.publish:
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
        return sent

    async def _apply_postgres(self, unique: list[domain.Decoded]) -> projection.Applied:
        for attempt in range(5):
            try:
                async with self.pool.acquire() as conn:
                    return await projection.apply_batch(conn, unique, self.caps, self.catalog)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                await asyncio.sleep(0.05 * (attempt + 1))
        async with self.pool.acquire() as conn:
            return await projection.apply_batch(conn, unique, self.caps, self.catalog)

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

    async def _apply_redis(self, entries: list[domain.EntryRow]) -> dict[PeriodKey, TopChange]:
        """Each board period's absolute entries into its Redis board; the tops that changed. Periods
        the board no longer keeps stay in Postgres only."""
        groups: dict[PeriodKey, list[domain.EntryRow]] = {}
        for e in entries:
            groups.setdefault((e.board, e.period), []).append(e)
        now = self.clock()
        kept = [(key, rows) for key, rows in groups.items() if self._kept(key, now)]
        if not kept:
            return {}
        # Board periods have disjoint keys: their scripts go out in one pipeline (one round trip for
        # the batch, not one per board: the end-to-end profile of issue 12). A board whose script
        # failed there (not loaded yet, or the board missing) takes the one-by-one path, which loads
        # the script and rebuilds a missing board; it applied nothing, so nothing is applied twice.
        pipe = self.redis.pipeline(transaction=False)
        boards = []
        for key, rows in kept:
            spec = self.catalog.boards[key[0]]
            board = self.redis_board(spec, spec.period(key[1]))
            board.queue(pipe, rows)
            boards.append(board)
        replies = await pipe.execute(raise_on_error=False)
        changes: dict[PeriodKey, TopChange] = {}
        for (key, rows), board, reply in zip(kept, boards, replies, strict=True):
            try:
                if isinstance(reply, Exception):
                    raise reply
                change = board.answer(reply)
            except (NoEpoch, ResponseError):
                change = await self._apply_board(key, rows)
            if change is not None:
                changes[key] = change
        return changes

    def _kept(self, key: PeriodKey, now: datetime) -> bool:
        spec = self.catalog.boards[key[0]]
        return spec.kept(spec.period(key[1]), now)

    async def _apply_board(self, key: PeriodKey, rows: list[domain.EntryRow]) -> TopChange | None:
        spec = self.catalog.boards[key[0]]
        period = spec.period(key[1])
        rb = self.redis_board(spec, period)
        try:
            return await rb.apply(rows)
        except NoEpoch:
            log.warning("board %s/%s missing from Redis; building it from Postgres", key[0], key[1])
            await self.rebuild(key[0], period)  # includes this batch: Postgres already committed it
            return await rb.apply(rows)

    async def _announce_pending(self, changes: dict[PeriodKey, TopChange]) -> TopChange | None:
        """Announce each changed top of a current period. A change is kept until sent, so that a
        retried batch still announces what its first attempt changed. Returns the scorer board's."""
        for key, change in changes.items():
            merged = domain.merge_changes(self._pending.get(key), change)
            if merged is not None:
                self._pending[key] = merged
        due = {}
        for key, change in self._pending.items():
            spec = self.catalog.boards[key[0]]
            if self._announced(spec, spec.period(key[1])):
                due[key] = change
        await self._announce(due)
        main = self._pending.get((self.settings.board, ALL_PERIOD))
        self._pending.clear()
        return main

    async def _announce(self, changes: dict[PeriodKey, TopChange]) -> None:
        """Send every change of the batch at once (one acknowledgement wait, not one per board; the
        topic has one partition, so each board's versions stay in order across batches), then record
        their versions in one statement. A failure keeps them all pending: a retried batch sends them
        again, and the hub ignores a version it already has."""
        if not changes:
            return
        if self.publish:
            records = [
                (key[0].encode(), self._board_changed(key, c).to_bytes()) for key, c in changes.items()
            ]
            sends = [await self.producer.send(self.topics.changes, value, key=k) for k, value in records]
            # The pub/sub copy goes out beside the Kafka send rather than after its acknowledgement:
            # Redis's boards already show this change, so nothing is revealed early by it.
            await asyncio.gather(*sends, self._repeat_on_redis([value for _, value in records]))
        async with self.pool.acquire() as conn:
            await projection.record_versions(conn, [(b, p, c.version) for (b, p), c in changes.items()])
        main = changes.get((self.settings.board, ALL_PERIOD))
        if main is not None:
            BOARD_VERSION.set(main.version)

    async def _repeat_on_redis(self, values: list[bytes]) -> None:
        """The announced records, repeated on Redis pub/sub for the broadcasters' live path (best
        effort: Kafka has them, and a broadcaster that misses these takes them from the topic)."""
        try:
            pipe = self.redis.pipeline(transaction=False)
            for value in values:
                pipe.publish(self.changes_channel, value)
            await pipe.execute()
        except Exception as exc:  # Redis is needed again next batch; Kafka covers this one
            log.warning("repeating board changes on Redis failed (%s); broadcasters follow Kafka", exc)

    def _board_changed(self, key: PeriodKey, change: TopChange) -> BoardChanged:
        board, period = key
        ascending = self.catalog.boards[board].ascending
        old = ranked_entries(change.old, ascending=ascending)
        new = ranked_entries(change.new, ascending=ascending)
        return BoardChanged(
            board=board,
            period=period,
            epoch=change.epoch,
            version=change.version,
            top=new,
            changed=changed_entries(old, new),
            at=now_ms(),
        )

    async def _dead_letter(self, bad: list[domain.Rejected]) -> None:
        """Each record to the DLQ with its raw bytes and error, and an audit event naming it."""
        if not self.publish:
            return
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
        if not rows:
            return
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
