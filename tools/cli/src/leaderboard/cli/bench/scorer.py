"""Scorer catch-up: events/s from a backlog already in the topic (100,000 events by default) to
their effects committed (action rows in Postgres, every user on the Redis board), for the Faust
scorer and, in the same run, a plain aiokafka consumer loop doing the same SQL and Redis work
(``plain_scorer``: the same :class:`Projector`), alternating, ``runs`` times each.

The backlog is produced once into one topic; each contender and run gets its own consumer group,
database and Redis prefix and reads that topic from the beginning. Two figures each: *wall* from process spawn to done
(start-up, group join and migrations included) and *steady* from the first batch's transaction
(``min(actions.applied_at)``) to done. Batches are counted as distinct ``applied_at`` values (one
per transaction, since ``now()`` is the transaction's start).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from redis.asyncio import Redis

from leaderboard.cli.bench.common import BENCH_TYPE, Context
from leaderboard.cli.bench.figures import figure, spread
from leaderboard.cli.bench.stats import rate
from leaderboard.common.events import ActionCompleted, now_ms
from leaderboard.common.kafka import ensure_topics, producer
from leaderboard.common.ranking import BoardKeys
from leaderboard.common.topics import Topics
from leaderboard.testkit.processes import spawn, stop
from leaderboard.testkit.testing import Namespace, System

log = logging.getLogger(__name__)
STARTUP_S = 60.0  # start-up allowance (group join, migrations) before a time box that starts at work


def _events(n: int, users: int) -> tuple[list[tuple[bytes, bytes]], int, int]:
    """(key, value) pairs keyed by user, their total points and the number of distinct users."""
    ids = [uuid.uuid4() for _ in range(users)]
    out: list[tuple[bytes, bytes]] = []
    total = 0
    for i in range(n):
        user = ids[i % users] if i < users else random.choice(ids)
        points = random.randint(1, 100)
        total += points
        now = now_ms()
        event = ActionCompleted(
            event_id=uuid.uuid4(),
            action_id=uuid.uuid4(),
            user_id=user,
            username=f"bench-{str(user)[:8]}",
            action_type=BENCH_TYPE,
            points=points,
            occurred_at=now,
            accepted_at=now,
            source="service",
            request_id="bench",
        )
        out.append((str(user).encode(), event.to_bytes()))
    return out, total, min(n, users)


async def _produce(namespaces: list[tuple[Namespace, int]], events: list[tuple[bytes, bytes]]) -> float:
    started = time.perf_counter()
    for ns, count in namespaces:
        settings = ns.settings()
        await ensure_topics(settings)
        topic = Topics(settings.topic_prefix).actions
        async with producer(settings) as kafka:
            pending = []
            for key, value in events[:count]:
                pending.append(await kafka.send(topic, value, key=key))
                if len(pending) >= 5_000:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
    return time.perf_counter() - started


async def _watch(
    ns: Namespace,
    start: Callable[[], object],
    events: int,
    users: int,
    limit_s: float,
    box_from_first: bool = False,
) -> dict[str, Any]:
    """Start the contender (``start`` blocks until it is up; it runs in a thread meanwhile) and
    poll Postgres and Redis until all ``events`` and ``users`` are there or ``limit_s`` passes
    (counted from the first applied event with ``box_from_first``, so start-up does not eat a short
    time box; start-up then has ``STARTUP_S`` of its own)."""
    rank_key = BoardKeys(ns.env["LEADERBOARD_REDIS_PREFIX"], "global").rank
    spawned_wall, spawned = time.time(), time.monotonic()
    starter = asyncio.create_task(asyncio.to_thread(start))
    conn = await asyncpg.connect(ns.dsn)
    redis = Redis.from_url(ns.env["LEADERBOARD_REDIS_URL"])
    done, timed_out, count = None, False, 0
    first_seen: float | None = None
    try:
        while True:
            if starter.done() and starter.exception() is not None:
                raise RuntimeError("the scorer did not start") from starter.exception()
            try:
                count = int(await conn.fetchval("SELECT count(*) FROM actions"))
            except asyncpg.UndefinedTableError:
                count = 0
            if count >= events and int(await redis.zcard(rank_key)) >= users:
                done = time.monotonic()
                break
            if box_from_first and count and first_seen is None:
                first_seen = time.monotonic()
            if box_from_first and first_seen is None:
                over = time.monotonic() - spawned > STARTUP_S + limit_s
            else:
                over = time.monotonic() - (first_seen or spawned) > limit_s
            if over:
                timed_out = True
                done = time.monotonic()
                break
            await asyncio.sleep(0.05)
        done_wall = spawned_wall + (done - spawned)
        row = await conn.fetchrow(
            "SELECT count(*) AS n, count(DISTINCT applied_at) AS batches, "
            "extract(epoch FROM min(applied_at))::float8 AS first, coalesce(sum(points), 0) AS points "
            "FROM actions"
        )
        scores = int(await conn.fetchval("SELECT coalesce(sum(score), 0) FROM users"))
        on_board = int(await redis.zcard(rank_key))
        await starter
    finally:
        await conn.close()
        await redis.aclose()
    n = int(row["n"]) if row else 0
    first = float(row["first"]) if row and row["first"] is not None else done_wall
    batches = int(row["batches"]) if row else 0
    return {
        "events": n,
        "expected_events": events,
        "timed_out": timed_out,
        "wall_s": done - spawned,
        "steady_s": done_wall - first,
        "events_per_s_wall": rate(n, done - spawned),
        "events_per_s_steady": rate(n, done_wall - first),
        "batches": batches,
        "mean_batch": rate(n, batches),
        "points_in_postgres": int(row["points"]) if row else 0,
        "score_sum": scores,
        "users_on_board": on_board,
    }


def run(ctx: Context) -> dict[str, Any]:
    """Produce the backlog once into a shared topic, then per run let each contender catch up on it
    from the beginning in a namespace of its own (consumer group, database, Redis prefix)."""
    sizes = ctx.sizes
    shared = ctx.namespace()
    prefix = shared.env["LEADERBOARD_TOPIC_PREFIX"]
    log_dir = ctx.log_dir("scorer")
    faust_runs: list[dict[str, Any]] = []
    plain_runs: list[dict[str, Any]] = []
    try:
        events, total, users = _events(sizes.events, sizes.users)
        produce_s = asyncio.run(_produce([(shared, sizes.events)], events))
        del events
        limit = max(120.0, sizes.events / 250)
        for round_ in range(sizes.runs):
            log.info("scorer round %d", round_ + 1)
            faust_ns = ctx.namespace(LEADERBOARD_TOPIC_PREFIX=prefix)
            system = System(faust_ns, log_dir)
            try:

                def start_faust() -> None:
                    system.start(only=["scorer"])  # noqa: B023 - called before the loop moves on

                faust = asyncio.run(_watch(faust_ns, start_faust, sizes.events, users, limit))
            finally:
                system.stop()
                faust_ns.drop()
            faust["consistent"] = faust["points_in_postgres"] == faust["score_sum"] == total
            faust_runs.append(faust)

            plain_ns = ctx.namespace(LEADERBOARD_TOPIC_PREFIX=prefix)
            procs: list[Any] = []
            try:

                def start_plain() -> None:
                    procs.append(  # noqa: B023
                        spawn(
                            [sys.executable, "-m", "leaderboard.cli.bench.plain_scorer"],
                            env=plain_ns.env,  # noqa: B023
                            log_path=log_dir / f"plain-{round_}.log",  # noqa: B023
                        )
                    )

                plain = asyncio.run(_watch(plain_ns, start_plain, sizes.events, users, limit))
            finally:
                for p in procs:
                    stop(p)
                plain_ns.drop()
            plain["consistent"] = plain["points_in_postgres"] == plain["score_sum"] == total
            plain_runs.append(plain)
    finally:
        shared.drop()

    def median_of(runs: list[dict[str, Any]], key: str) -> float:
        return float(spread([r[key] for r in runs])["median"])

    baseline = "plain aiokafka consumer, same SQL (plain_scorer)"
    figures = [
        figure(
            "scorer_catchup_events_per_s",
            f"scorer catch-up on a {sizes.events:,}-event backlog (steady)",
            "events/s",
            "higher",
            [r["events_per_s_steady"] for r in faust_runs],
            [r["events_per_s_steady"] for r in plain_runs],
            baseline,
            note="steady: from the first batch's transaction to the last effect; wall (start-up included) in runs",
        ),
        figure(
            "scorer_catchup_wall_s",
            "scorer catch-up wall time, start-up included",
            "s",
            "lower",
            [r["wall_s"] for r in faust_runs],
            [r["wall_s"] for r in plain_runs],
            baseline,
        ),
    ]
    return {
        "events": sizes.events,
        "users": users,
        "partitions": int(shared.env["LEADERBOARD_ACTIONS_PARTITIONS"]),
        "batch_size": sizes.batch_size,
        "produce_s": produce_s,
        "figures": figures,
        "faust": {"events_per_s_steady": median_of(faust_runs, "events_per_s_steady"), "runs": faust_runs},
        "baseline_plain_consumer": {
            "events_per_s_steady": median_of(plain_runs, "events_per_s_steady"),
            "runs": plain_runs,
        },
        "consistent": all(r["consistent"] and not r["timed_out"] for r in faust_runs + plain_runs),
    }
