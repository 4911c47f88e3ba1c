"""Boards through the running services (issue 10): events of several types feed global, daily, weekly
and best-match as the catalog says; a daily period rolls over at midnight (the scorer's clock shifted
by LEADERBOARD_CLOCK_OFFSET_S) without a restart, and a live WebSocket client on ``daily`` gets the new
period as a new-epoch snapshot; ``leaderboard replay`` gives the same boards and fills a board added
to the catalog."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import websockets
from redis.asyncio import Redis

from leaderboard.common.boardkeys import BoardKeys
from leaderboard.common.boards import BoardCatalog
from leaderboard.testkit.testing import System

if TYPE_CHECKING:  # pytest imports conftest itself (importlib mode); mypy knows it by path
    from services.scorer.tests.integration.conftest import Kit

CATALOG = BoardCatalog.load()


def period_of(board: str, at: datetime) -> str:
    found = CATALOG.boards[board].period_at(at)
    assert found is not None
    return found.id


async def accepted_times(kit: Kit) -> dict[str, datetime]:
    conn = await kit.pg()
    try:
        rows = await conn.fetch("SELECT action_id, accepted_at FROM actions")
        return {str(r["action_id"]): r["accepted_at"] for r in rows}
    finally:
        await conn.close()


async def test_events_of_several_types_feed_each_board_as_configured(kit: Kit) -> None:
    system = kit.start(
        only=("ingest", "scorer", "broadcaster"),
        LEADERBOARD_BOARDS=json.dumps(["global", "best-match"]),
    )
    ada, bob = str(uuid.uuid4()), str(uuid.uuid4())
    sent = [(ada, "match_won", 30), (bob, "quest", 120), (ada, "match_won", 80), (ada, "quest", 40)]
    sent += [(ada, "match_won", 50), (bob, "match_won", 60), (bob, "daily_login", 10)]
    events: list[dict[str, Any]] = [
        {
            "actionId": str(uuid.uuid4()),
            "userId": user,
            "username": "ada" if user == ada else "bob",
            "actionType": kind,
            "occurredAt": datetime.now(UTC).isoformat(),
            "points": points,
        }
        for user, kind, points in sent
    ]
    token = system.token(str(uuid.uuid4()), role="service", name="boards-backend")
    async with httpx.AsyncClient(base_url=system.ingest_url, timeout=30) as ingest:
        for e in events:  # one request each: separate batches, in this order
            reply = await ingest.post(
                "/api/v1/events", json={"events": [e]}, headers={"Authorization": f"Bearer {token}"}
            )
            assert reply.status_code == 202, reply.text

    async def applied() -> bool:
        return bool(await kit.applied_count() == len(events))

    await kit.eventually(applied, 60, "every event applied")
    times = await accepted_times(kit)
    day = period_of("daily", times[events[-1]["actionId"]])
    week = period_of("weekly", times[events[-1]["actionId"]])
    assert {period_of("daily", t) for t in times.values()} == {day}  # (a test run across midnight UTC)

    sums = [(ada, 200), (bob, 190)]
    assert await kit.entries("global") == sums
    assert await kit.pg_board() == sums  # seed 000's users table, as before
    assert await kit.entries("daily", day) == sums
    assert await kit.entries("weekly", week) == sums
    assert await kit.entries("best-match") == [(ada, 80), (bob, 60)]  # the best single match_won

    async def in_redis() -> bool:
        return bool(
            await kit.redis_entries("best-match") == [(ada, 80), (bob, 60)]
            and await kit.redis_entries("daily", day) == sums
            and await kit.redis_entries("weekly", week) == sums
            and await kit.redis_board() == sums
        )

    await kit.eventually(in_redis, 30, "every board period in Redis")
    conn = await kit.pg()
    try:
        best = await conn.fetchrow(
            "SELECT action_id, reached_at FROM board_entries WHERE board = 'best-match' AND user_id = $1",
            uuid.UUID(ada),
        )
    finally:
        await conn.close()
    assert str(best["action_id"]) == events[2]["actionId"]  # the 80 set it, and keeps its time
    assert best["reached_at"] == times[events[2]["actionId"]]

    async with httpx.AsyncClient(base_url=system.broadcaster_url, timeout=30) as reads:

        async def served() -> bool:
            body = (await reads.get("/api/v1/leaderboard", params={"board": "best-match"})).json()
            return [(e["userId"], e["score"]) for e in body.get("leaderboard", [])] == [(ada, 80), (bob, 60)]

        await kit.eventually(served, 30, "the broadcaster to serve best-match")
        glob = (await reads.get("/api/v1/leaderboard")).json()
        assert [(e["userId"], e["score"]) for e in glob["leaderboard"]] == sums


@pytest.mark.slow  # the scorer's clock needs ~30 s to reach midnight
async def test_a_daily_period_rolls_over_at_midnight_for_live_clients(kit: Kit) -> None:
    day = datetime(2026, 11, 23, tzinfo=UTC)  # a Monday: only the daily board rolls over at its end
    midnight = day + timedelta(days=1)
    # The scorer's clock reads 23:59:30 on the 23rd now: it passes midnight during the test.
    offset = (midnight - timedelta(seconds=30) - datetime.now(UTC)).total_seconds()
    await kit.produce([])  # the topics exist before the broadcaster's change feed looks for them
    system = kit.start(
        only=("scorer", "broadcaster"),
        LEADERBOARD_CLOCK_OFFSET_S=str(offset),
        LEADERBOARD_BOARDS=json.dumps(["global", "daily"]),
    )
    ws = await websockets.connect(system.ws_url + "?board=daily", open_timeout=30, ping_interval=None)
    try:
        users = [uuid.UUID(f"00000000-0000-4000-8000-{n:012d}") for n in range(1, 4)]
        before = [
            kit.action(u, 10 * (i + 1), accepted_at=midnight - timedelta(seconds=40 - i))
            for i, u in enumerate(users)
        ]
        await kit.produce(before)
        old_top = [(str(u), 10 * (i + 1)) for i, u in reversed(list(enumerate(users)))]
        frame = await next_frame(ws, lambda f: [(e["userId"], e["score"]) for e in f["top"]] == old_top)
        old_epoch = frame["epoch"]
        # No event and no restart: the scorer's clock passes midnight and opens 2026-11-24.
        fresh = await next_frame(ws, lambda f: f["epoch"] != old_epoch, within=90)
        assert fresh["type"] == "snapshot" and fresh["top"] == [] and fresh["board"] == "daily"
    finally:
        await ws.close()
    assert await kit.entries("daily", "2026-11-23") == old_top  # the old period stays readable
    assert await kit.redis_entries("daily", "2026-11-23") == old_top  # and in Redis, while kept
    assert await kit.entries("daily", "2026-11-24") == []
    redis = Redis.from_url(kit.settings.redis_url, decode_responses=True)
    try:
        keys = BoardKeys.of(kit.settings.redis_prefix, "daily", "2026-11-24")
        assert await redis.get(BoardKeys(kit.settings.redis_prefix, "daily").current_period) == "2026-11-24"
        assert (await redis.hgetall(keys.meta))["epoch"] == fresh["epoch"]
        ttl = await redis.ttl(BoardKeys.of(kit.settings.redis_prefix, "daily", "2026-11-23").meta)
        assert 0 < ttl <= 8 * 86400  # kept 7 past days, then expired
    finally:
        await redis.aclose()
    conn = await kit.pg()
    try:
        opened = await conn.fetchrow("SELECT * FROM boards WHERE board = 'daily' AND period = '2026-11-24'")
    finally:
        await conn.close()
    assert opened["epoch"] == fresh["epoch"] and opened["resets_at"] == midnight + timedelta(days=1)

    late = kit.action(users[0], 7, accepted_at=midnight + timedelta(seconds=1))
    await kit.produce([late])

    async def moved() -> bool:
        return bool(await kit.redis_entries("daily", "2026-11-24") == [(str(users[0]), 7)])

    await kit.eventually(moved, 30, "the new period's first entry")
    assert await kit.entries("daily", "2026-11-23") == old_top
    assert dict(await kit.entries("global"))[str(users[0])] == 17


async def next_frame(ws: Any, match: Any, within: float = 30) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        while True:
            frame: dict[str, Any] = json.loads(await ws.recv())
            if match(frame):
                return frame

    return await asyncio.wait_for(read(), within)


def cli(system: System, *args: str, **env: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "leaderboard.cli", *args],
        env={**system.env, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    ).stdout


async def snapshot(kit: Kit) -> list[tuple[Any, ...]]:
    conn = await kit.pg()
    try:
        rows = await conn.fetch(
            "SELECT board, period, user_id, score, reached_at, action_id, metadata FROM board_entries "
            "ORDER BY board, period, rank_key, reached_at, user_id"
        )
        return [tuple(r) for r in rows]
    finally:
        await conn.close()


async def test_redelivery_and_replay_give_the_same_boards_and_replay_fills_a_new_board(
    kit: Kit, tmp_path: Path
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    users = [uuid.uuid4() for _ in range(12)]
    kinds = ["quest", "match_won", "boss_defeated"]
    events = [
        kit.action(
            u,
            1 + (i * 37) % 200,
            action_type=kinds[i % 3],
            accepted_at=now - timedelta(days=i % 3, seconds=i),
            username=f"p{i % 12}",
        )
        for i, u in enumerate(users * 4)
    ]
    with_meta = kit.action(users[0], 250, action_type="match_won", accepted_at=now)
    with_meta = with_meta.model_copy(update={"metadata": {"map": "dust2", "kills": 31}})
    events.append(with_meta)
    system = kit.start()
    await kit.produce(events)
    await kit.produce(events[:15])  # redelivered: nothing changes

    async def settled() -> bool:
        return bool(
            await kit.applied_count() == len(events) and (await kit.metrics(system)).get("duplicate", 0) >= 15
        )

    await kit.eventually(settled, 60, "every event once and the repeats seen")
    await kit.eventually(lambda: _agree(kit), 30, "Redis to equal Postgres on every board")
    before = await snapshot(kit)
    boards = {(b, p) for b, p, *_ in before}
    assert {b for b, _ in boards} == {"global", "daily", "weekly", "best-match"}
    assert len({p for b, p in boards if b == "daily"}) == 3  # today, yesterday, the day before
    best = [r for r in before if r[0] == "best-match" and r[2] == users[0]]
    assert best[0][3] == 250 and json.loads(best[0][6]) == {"map": "dust2", "kills": 31}
    for board, period in boards:
        if CATALOG.boards[board].kept(CATALOG.boards[board].period(period), datetime.now(UTC)):

            async def agree(board: str = board, period: str = period) -> bool:
                return bool(await kit.entries(board, period) == await kit.redis_entries(board, period))

            await kit.eventually(agree, 20, f"Redis {board}/{period} to equal Postgres")
    redis_before = {bp: await kit.redis_entries(*bp) for bp in boards}

    system.supervisor.stop("scorer")
    extra = tmp_path / "boards.toml"
    extra.write_text(
        (Path(__file__).parents[4] / "libs/common/src/leaderboard/common/boards.default.toml").read_text()
        + '\n[[boards]]\nid = "best-boss"\nrule = "best"\ntypes = ["boss_defeated"]\n'
    )
    summary = json.loads(cli(system, "replay", LEADERBOARD_BOARDS_FILE=str(extra)).strip().splitlines()[-1])
    assert summary["applied"] == len(events) and summary["duplicates"] == 15
    after = await snapshot(kit)
    assert [r for r in after if r[0] != "best-boss"] == before  # the same boards, entry for entry
    assert {bp: await kit.redis_entries(*bp) for bp in boards} == redis_before
    await kit.check_all_boards()
    bosses: dict[str, int] = {}
    for e in events:
        if e.action_type == "boss_defeated":
            bosses[str(e.user_id)] = max(bosses.get(str(e.user_id), 0), e.points)
    filled = await kit.entries("best-boss")
    assert dict(filled) == bosses and len(filled) == 4  # users 2, 5, 8, 11 defeat bosses
    assert await kit.redis_entries("best-boss") == filled


async def _agree(kit: Kit) -> bool:
    try:
        await kit.check_all_boards()
    except AssertionError:
        return False
    return True
