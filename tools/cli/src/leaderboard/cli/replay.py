"""Rebuild the projections from the log, and Redis from Postgres.

``replay``: reads ``leaderboard.actions.v1`` (actions and corrections, issue 11) from the beginning of
every partition, or from ``--from-offset N`` / ``--from-time T``, up to the offsets that were the end
when it started, through the same :class:`Projector` the scorer uses (opened by the scorer's
``bootstrap``), so the result equals what the scorer would have built: same dedupe, same tie-break
times, same corrections in log order, every board of the catalog in every period (periods come from
each event's acceptedAt). A board added to the catalog is filled this way. From the beginning, the
target is emptied first (actions, users, corrections, every board's entries and Redis keys); from an
offset or a time it is applied on top of what the target holds (idempotent by actionId and
correctionId).

Targets: the live stores (refused while a scorer holds its lease, see ``worker.Lease``), or with
``into`` a Postgres schema of that name and the Redis prefix ``{prefix}.{name}``, side by side: the
live stores are only read, and the side projector publishes nothing to Kafka. :func:`compare` then
lists every (board, period, user) whose score or rank differs between the live and the side stores.

``rebuild_cache``: Redis only, from Postgres (for a flushed or lost Redis): every board period the
boards keep.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from redis.asyncio import Redis

from leaderboard.common.boardkeys import BoardKeys
from leaderboard.common.boards import BoardCatalog
from leaderboard.common.events import epoch_ms
from leaderboard.common.kafka import ensure_topics, new_consumer
from leaderboard.common.ranking import RankKey
from leaderboard.common.redis import redis_client
from leaderboard.common.topics import Topics
from leaderboard.scorer.adapters.lease import lease_pattern
from leaderboard.scorer.bootstrap import bootstrap
from leaderboard.scorer.domain import Record
from leaderboard.scorer.projector import Projector
from leaderboard.scorer.settings import ScorerSettings

Progress = Callable[[int], object]
SIDE_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")


class ScorerRunning(RuntimeError):
    """A replay into the live stores while a scorer runs would race it."""


async def _clear_boards(settings: ScorerSettings, redis: Redis) -> int:
    """Delete every key of every board and period (``{prefix}:board:*``, see ``boardkeys``)."""
    keys = [k async for k in redis.scan_iter(match=f"{settings.redis_prefix}:board:*", count=1000)]
    for i in range(0, len(keys), 1000):
        await redis.delete(*keys[i : i + 1000])
    return len(keys)


async def rebuild_cache(settings: ScorerSettings) -> int:
    await ensure_topics(settings)
    async with bootstrap(settings) as ports:
        await _clear_boards(settings, ports.redis)
        changes = await ports.projector.rebuild_all()
        await ports.projector.roll_over()
        change = changes.get((settings.board, "all"))
        return change.version if change else 0


def side_settings(settings: ScorerSettings, name: str) -> ScorerSettings:
    """The stores of a side-by-side replay named ``name``: schema ``name``, Redis prefix ``{prefix}.{name}``."""
    if not SIDE_NAME.fullmatch(name):
        raise ValueError(f"--into {name!r}: a side name is 1-40 of a-z, 0-9 and _, starting with a letter")
    if name == settings.postgres_schema or name == "public":
        raise ValueError(f"--into {name!r} names the live schema")
    return settings.model_copy(
        update={"postgres_schema": name, "redis_prefix": f"{settings.redis_prefix}.{name}"}
    )


async def running_scorers(settings: ScorerSettings) -> list[str]:
    """The leases of the scorers running on these stores (``worker.Lease``)."""
    async with redis_client(settings) as redis:
        found = [
            k.decode() if isinstance(k, bytes) else str(k)
            async for k in redis.scan_iter(match=lease_pattern(settings.redis_prefix), count=1000)
        ]
    return sorted(found)


@dataclass
class Start:
    """Where to start reading: the beginning, an offset of every partition, or a time."""

    offset: int | None = None
    at: datetime | None = None

    @property
    def beginning(self) -> bool:
        return self.offset is None and self.at is None


@dataclass
class Summary:
    records: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    corrections: int = 0
    users: int = 0
    seconds: float = 0.0
    into: str | None = None
    extra: dict[str, object] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        rate = self.records / self.seconds if self.seconds > 0 else 0.0
        return {
            "records": self.records,
            "events": self.records,
            "applied": self.applied,
            "duplicates": self.duplicates,
            "dead_lettered": self.dead_lettered,
            "corrections": self.corrections,
            "users": self.users,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(rate, 1),
            "into": self.into,
        }


async def replay(
    settings: ScorerSettings,
    batch_size: int = 5000,
    *,
    start: Start | None = None,
    into: str | None = None,
    on_start: Progress | None = None,
    on_progress: Progress | None = None,
) -> dict[str, object]:
    """Replay the log into the live stores (refused while a scorer runs) or into ``into``."""
    start = start or Start()
    if into is None:
        leases = await running_scorers(settings)
        if leases:
            raise ScorerRunning(
                f"{len(leases)} scorer(s) are running on these stores ({', '.join(leases)}): a replay "
                "into the live stores would race them. Stop the scorers first, or replay side by side "
                "with --into NAME (--compare shows the differences)."
            )
    target = side_settings(settings, into) if into is not None else settings
    began = time.monotonic()
    summary = Summary(into=into)
    await ensure_topics(settings)
    async with bootstrap(target, publish=into is None) as ports:
        if start.beginning:
            async with ports.pool.acquire() as conn:
                await conn.execute("TRUNCATE actions, users, board_entries, corrections")
            await _clear_boards(target, ports.redis)
            await ports.projector.rebuild_all()
        await _read(ports.projector, settings, start, batch_size, summary, on_start, on_progress)
        await ports.projector.ensure_board()  # current periods no replayed event fed: open and empty
        await ports.projector.roll_over()
        async with ports.pool.acquire() as conn:
            summary.users = int(await conn.fetchval("SELECT count(*) FROM users"))
    summary.seconds = time.monotonic() - began
    return summary.as_dict()


async def _starts(consumer: AIOKafkaConsumer, tps: list[TopicPartition], start: Start) -> None:
    if start.offset is not None:
        for tp in tps:
            consumer.seek(tp, start.offset)
    elif start.at is not None:
        found = await consumer.offsets_for_times({tp: epoch_ms(start.at) for tp in tps})
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            hit = found.get(tp)
            consumer.seek(tp, hit.offset if hit is not None else ends[tp])
    else:
        await consumer.seek_to_beginning(*tps)


async def _read(
    projector: Projector,
    settings: ScorerSettings,
    start: Start,
    batch_size: int,
    summary: Summary,
    on_start: Progress | None,
    on_progress: Progress | None,
) -> None:
    topic = Topics(settings.topic_prefix).actions
    consumer = new_consumer(settings, group_id=None)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await _starts(consumer, tps, start)
        listed = await consumer.end_offsets(tps)
        begin = {tp: await consumer.position(tp) for tp in tps}
        if on_start is not None:
            on_start(sum(max(0, listed[tp] - begin[tp]) for tp in tps))
        # Tansu's ListOffsets can answer with the last batch's base offset + 1 instead of the
        # high watermark, so the end of each partition is fixed by the first fetch response's
        # high watermark (never below what ListOffsets said).
        end: dict[TopicPartition, int] = {}
        remaining = {tp for tp in tps if listed[tp] > begin[tp]}
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=1000, max_records=batch_size)
            for tp in remaining:
                if tp not in end and consumer.highwater(tp) is not None:
                    end[tp] = max(listed[tp], consumer.highwater(tp) or 0)
            records = []
            for tp, msgs in fetched.items():
                limit = end.get(tp, listed[tp])
                records += [
                    Record(m.topic, m.partition, m.offset, m.key, m.value) for m in msgs if m.offset < limit
                ]
            for tp in list(remaining):
                if tp in end and await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
            if records:
                result = await projector.process(records)
                summary.records += len(records)
                summary.applied += result.applied
                summary.duplicates += result.duplicates
                summary.dead_lettered += result.dead_lettered
                summary.corrections += result.corrections
                if on_progress is not None:
                    on_progress(len(records))
    finally:
        await consumer.stop()


# ---- compare: the live stores against a side replay --------------------------------------------

Standing = dict[tuple[str, str, str], tuple[int, int]]  # (board, period, user) -> (score, rank)

STANDINGS = """
SELECT board, period, user_id, score,
       row_number() OVER (PARTITION BY board, period ORDER BY rank_key, reached_at, user_id) AS rank
FROM board_entries
"""


async def _pg_standings(dsn: str, schema: str | None) -> Standing:
    settings = {"search_path": f'"{schema}"'} if schema else None
    conn = await asyncpg.connect(dsn, server_settings=settings)
    try:
        rows = await conn.fetch(STANDINGS)
    finally:
        await conn.close()
    return {(r["board"], r["period"], str(r["user_id"])): (int(r["score"]), int(r["rank"])) for r in rows}


async def _redis_standings(
    settings: ScorerSettings, catalog: BoardCatalog, periods: set[tuple[str, str]]
) -> Standing:
    out: Standing = {}
    async with redis_client(settings) as redis:
        for board, period in sorted(periods):
            spec = catalog.get(board)
            if spec is None:
                continue
            members = await redis.zrange(BoardKeys.of(settings.redis_prefix, board, period).rank, 0, -1)
            for rank, m in enumerate(members, 1):
                k = RankKey.parse(m if isinstance(m, bytes | str) else str(m), spec.ascending)
                out[(board, period, k.user_id)] = (k.score, rank)
    return out


def differences(live: Standing, side: Standing, where: str) -> list[str]:
    """One line per (board, period, user) whose score or rank differs (or that only one side has)."""
    lines = []
    for key in sorted(set(live) | set(side)):
        a, b = live.get(key), side.get(key)
        if a != b:
            board, period, user = key
            lines.append(f"{where} {board}/{period} {user}: live {_show(a)}, side {_show(b)}")
    return lines


def _show(value: tuple[int, int] | None) -> str:
    return "absent" if value is None else f"score {value[0]} rank {value[1]}"


async def compare(settings: ScorerSettings, into: str) -> list[str]:
    """The differences between the live boards and the side replay ``into`` (Postgres: every board
    and period; Redis: every period either side's Postgres holds); empty when identical."""
    side = side_settings(settings, into)
    live_pg = await _pg_standings(settings.postgres_dsn, settings.postgres_schema)
    side_pg = await _pg_standings(side.postgres_dsn, into)
    catalog = BoardCatalog.load(settings.boards_file)
    now = datetime.now().astimezone()
    periods = set()
    for board, period, _ in set(live_pg) | set(side_pg):
        spec = catalog.get(board)
        if spec is not None and spec.kept(spec.period(period), now):
            periods.add((board, period))
    live_redis = await _redis_standings(settings, catalog, periods)
    side_redis = await _redis_standings(side, catalog, periods)
    return differences(live_pg, side_pg, "postgres") + differences(live_redis, side_redis, "redis")


# ---- the command ------------------------------------------------------------------------------


def run_command(
    settings: ScorerSettings,
    from_offset: int | None,
    from_time: str | None,
    into: str | None,
    do_compare: bool,
) -> int:
    """``leaderboard replay``: a progress bar on stderr, the summary (JSON) on stdout as the last
    line, then with ``--compare`` the differences or "identical". Returns the exit code."""
    import asyncio
    import json
    import sys

    import click

    from leaderboard.cli.export import parse_time

    if do_compare and into is None:
        raise click.UsageError("--compare needs --into NAME (it compares the live boards with the side ones)")
    if from_offset is not None and from_time is not None:
        raise click.UsageError("give --from-offset or --from-time, not both")
    try:
        start = Start(from_offset, parse_time(from_time, "--from-time") if from_time is not None else None)
        if into is not None:
            side_settings(settings, into)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    bar: Any = None

    def begin(total: int) -> None:
        nonlocal bar
        bar = click.progressbar(length=max(total, 1), label="replay", file=sys.stderr, show_pos=True)
        bar.__enter__()

    try:
        summary = asyncio.run(
            replay(
                settings, start=start, into=into, on_start=begin, on_progress=lambda n: bar and bar.update(n)
            )
        )
    except ScorerRunning as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    click.echo(json.dumps(summary))
    if not do_compare:
        return 0
    assert into is not None
    diffs = asyncio.run(compare(settings, into))
    for line in diffs:
        click.echo(line)
    click.echo("identical" if not diffs else f"{len(diffs)} difference(s)")
    return 0 if not diffs else 1
