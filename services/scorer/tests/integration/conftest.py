"""Fixtures for the scorer's integration tests: the real scorer as a subprocess (``leaderboard
scorer``) in a fresh namespace, with helpers to put records on the actions topic and read what
Postgres, Redis and the scorer's /metrics then hold."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from leaderboard.common.boardkeys import BoardKeys
from leaderboard.common.boards import BoardCatalog
from leaderboard.common.events import ActionCompleted, now_ms
from leaderboard.common.kafka import ensure_topics, new_consumer, producer
from leaderboard.common.ranking import RankKey
from leaderboard.common.topics import Topics
from leaderboard.scorer.settings import ScorerSettings
from leaderboard.testkit.testing import Namespace, System

# Fast recovery after a kill: a dead member's partitions move on after this many seconds.
FAST_ENV = {"LEADERBOARD_SESSION_TIMEOUT_S": "3", "LEADERBOARD_LOG_LEVEL": "INFO"}
_METRIC = re.compile(r'^(\w+)\{outcome="(\w+)"\} ([0-9.e+]+)$', re.M)


def make_action(
    user: uuid.UUID,
    points: int = 50,
    *,
    action_type: str = "quest",
    accepted_at: datetime | None = None,
    action_id: uuid.UUID | None = None,
    username: str | None = None,
) -> ActionCompleted:
    at = accepted_at or now_ms()
    return ActionCompleted(
        event_id=uuid.uuid4(),
        action_id=action_id or uuid.uuid4(),
        user_id=user,
        username=username or f"user-{str(user)[:6]}",
        action_type=action_type,
        points=points,
        occurred_at=at,
        accepted_at=at,
        source="service",
        request_id="scorer-test",
    )


EXPECTED_BOARDS = """
SELECT 'global' AS board, 'all' AS period, user_id, sum(points) AS score FROM actions GROUP BY user_id
UNION ALL
SELECT 'daily', to_char(accepted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), user_id, sum(points)
FROM actions GROUP BY 2, user_id
UNION ALL
SELECT 'weekly', to_char(accepted_at AT TIME ZONE 'UTC', 'IYYY-"W"IW'), user_id, sum(points)
FROM actions GROUP BY 2, user_id
UNION ALL
SELECT 'best-match', 'all', user_id, max(points) FROM actions WHERE action_type = 'match_won' GROUP BY user_id
"""


class Kit:
    def __init__(self, ns: Namespace, log_dir: Path) -> None:
        self.ns = ns
        self.log_dir = log_dir
        self.systems: list[System] = []
        fields = ScorerSettings.model_fields
        # The namespace's LEADERBOARD_* values as field values (pydantic parses each from its string).
        values: dict[str, Any] = {
            k[12:].lower(): v
            for k, v in ns.env.items()
            if k.startswith("LEADERBOARD_") and k[12:].lower() in fields
        }
        self.settings = ScorerSettings(_env_file=None, **values)
        self.topics = Topics(self.settings.topic_prefix)
        self.keys = BoardKeys(self.settings.redis_prefix, self.settings.board)

    def start(self, only: Iterable[str] = ("scorer",), **env: str) -> System:
        return self._start(only, 1, env)

    def start_scorers(self, count: int, /, **env: str) -> System:
        """A system with specs for ``count`` scorer replicas (``scorer``, ``scorer-2``, ...), of which
        only the first starts now (``system.restart("scorer-2")`` starts the next)."""
        return self._start(("scorer",), count, env)

    def _start(self, only: Iterable[str], scorers: int, env: dict[str, str]) -> System:
        system = System(self.ns, self.log_dir, scorers=scorers, extra_env={**FAST_ENV, **env})
        self.systems.append(system)
        return system.start(only=list(only))

    async def produce(self, events: Iterable[ActionCompleted | tuple[bytes | None, bytes]]) -> int:
        await ensure_topics(self.settings)
        n = 0
        async with producer(self.settings) as p:
            futures = []
            for e in events:
                key, value = (str(e.user_id).encode(), e.to_bytes()) if isinstance(e, ActionCompleted) else e
                futures.append(await p.send(self.topics.actions, value, key=key))
                n += 1
            await asyncio.gather(*futures)
        return n

    async def read_topic(self, topic: str, within: float = 10.0) -> list[bytes]:
        consumer = new_consumer(self.settings, topic, group_id=None)
        await consumer.start()
        try:
            out: list[bytes] = []
            deadline = asyncio.get_running_loop().time() + within
            while asyncio.get_running_loop().time() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                got = [m.value for msgs in batch.values() for m in msgs]
                out += got
                if out and not got:
                    break
            return out
        finally:
            await consumer.stop()

    async def pg(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.ns.dsn)

    async def pg_board(self) -> list[tuple[str, int]]:
        """Postgres board order: score desc, reached_at asc, user_id asc."""
        conn = await self.pg()
        try:
            rows = await conn.fetch(
                "SELECT user_id, score FROM users ORDER BY score DESC, reached_at ASC, user_id ASC"
            )
            return [(str(r["user_id"]), int(r["score"])) for r in rows]
        finally:
            await conn.close()

    async def redis_board(self) -> list[tuple[str, int]]:
        """Redis board order: the rank zset, lexicographic on its fixed-width members."""
        redis = Redis.from_url(self.settings.redis_url)
        try:
            # a client without decode_responses: members are bytes
            members = cast(list[bytes], await redis.zrange(self.keys.rank, 0, -1))
            return [(k.user_id, k.score) for k in map(RankKey.parse, members)]
        finally:
            await redis.aclose()

    async def entries(self, board: str, period: str = "all") -> list[tuple[str, int]]:
        """One board period in Postgres (``board_entries``), in board order."""
        conn = await self.pg()
        try:
            rows = await conn.fetch(
                "SELECT user_id, score FROM board_entries WHERE board = $1 AND period = $2 "
                "ORDER BY rank_key, reached_at, user_id",
                board,
                period,
            )
            return [(str(r["user_id"]), int(r["score"])) for r in rows]
        finally:
            await conn.close()

    async def redis_entries(
        self, board: str, period: str = "all", ascending: bool = False
    ) -> list[tuple[str, int]]:
        """One board period in Redis, in board order."""
        redis = Redis.from_url(self.settings.redis_url)
        try:
            rank = BoardKeys.of(self.settings.redis_prefix, board, period).rank
            members = cast(list[bytes], await redis.zrange(rank, 0, -1))
            return [(k.user_id, k.score) for k in (RankKey.parse(m, ascending) for m in members)]
        finally:
            await redis.aclose()

    async def check_all_boards(self) -> dict[tuple[str, str], int]:
        """Every board of the default catalog against a recompute in SQL from ``actions`` (sum per
        user for global, per UTC day for daily, per ISO week for weekly; the best match_won for
        best-match), and Redis against Postgres for every period the board keeps. Returns the number
        of entries per board and period."""
        conn = await self.pg()
        try:
            want_rows = await conn.fetch(EXPECTED_BOARDS)
            got_rows = await conn.fetch("SELECT board, period, user_id, score FROM board_entries")
        finally:
            await conn.close()
        want = {(r["board"], r["period"], str(r["user_id"])): int(r["score"]) for r in want_rows}
        catalog, now = BoardCatalog.load(), datetime.now(UTC)
        got = {
            (r["board"], r["period"], str(r["user_id"])): int(r["score"])
            for r in got_rows
            if r["board"] in catalog.boards  # a test's extra board is checked by the test
        }
        assert got == want
        counts: dict[tuple[str, str], int] = {}
        for board, period, _ in got:
            counts[(board, period)] = counts.get((board, period), 0) + 1
        for board, period in counts:
            spec = catalog.boards[board]
            if spec.kept(spec.period(period), now):
                pg = await self.entries(board, period)
                assert await self.redis_entries(board, period, spec.ascending) == pg, (board, period)
        return counts

    async def redis_meta(self) -> dict[str, str]:
        redis = Redis.from_url(self.settings.redis_url, decode_responses=True)
        try:
            return cast(dict[str, str], await redis.hgetall(self.keys.meta))  # decode_responses
        finally:
            await redis.aclose()

    async def flush_redis(self) -> int:
        """Delete only this namespace's keys (never FLUSHALL: the Redis may be shared)."""
        redis = Redis.from_url(self.settings.redis_url)
        try:
            keys = [k async for k in redis.scan_iter(match=f"{self.ns.name}:*", count=1000)]
            if keys:
                await redis.delete(*keys)
            return len(keys)
        finally:
            await redis.aclose()

    async def applied_count(self) -> int:
        conn = await self.pg()
        try:
            return int(await conn.fetchval("SELECT count(*) FROM actions"))
        except asyncpg.UndefinedTableError:
            return 0
        finally:
            await conn.close()

    async def metrics(self, system: System, name: str = "scorer") -> dict[str, float]:
        url = system.specs[name].health_url.replace("/readyz", "/metrics")
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(url)).text
        out: dict[str, float] = {}
        for metric, outcome, value in _METRIC.findall(text):
            if metric == "scorer_events_total":
                out[outcome] = float(value)
        return out

    # Test modules cannot import from conftest (importlib mode), so the helpers ride on the fixture.
    action = staticmethod(make_action)

    @staticmethod
    async def eventually(
        check: Callable[[], Awaitable[bool]],
        within: float = 60.0,
        message: str | Callable[[], str] = "condition",
    ) -> None:
        await eventually(check, within, message)


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 60.0, message: str | Callable[[], str] = "condition"
) -> None:
    """Wait until ``check`` holds; ``message`` (or what it returns, to describe the last state seen)
    names the condition on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.25)
    what = message() if callable(message) else message
    raise AssertionError(f"timed out after {within:.0f}s waiting for {what}")


@pytest.fixture
async def kit(fresh_namespace: Namespace, tmp_path: Path) -> AsyncIterator[Kit]:
    k = Kit(fresh_namespace, tmp_path / "logs")
    try:
        yield k
    finally:
        for s in k.systems:
            s.stop()
