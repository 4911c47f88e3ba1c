"""Corrections as events through the running services (issue 11): a cheater's actions voided by an
event on the actions topic leave every board (global, daily, weekly, best-match) in Postgres and
Redis and the change reaches a WebSocket client; a restore puts them back; a rename changes the name
on the boards; the voided actions stay in Postgres with who, when and why; a replay of the log
reproduces all of it; ``replay --into side --compare`` reports identical while the scorer runs, and a
replay into the live stores is refused while it runs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING, Any

import websockets

from leaderboard.common.boards import BoardCatalog
from leaderboard.common.events import (
    ActionVoided,
    Correction,
    UserActionsRestored,
    UserActionsVoided,
    UserRenamed,
    correction_record,
    now_ms,
)
from leaderboard.testkit.testing import System

if TYPE_CHECKING:  # pytest imports conftest itself (importlib mode); mypy knows it by path
    from services.scorer.tests.integration.conftest import Kit

CATALOG = BoardCatalog.load()


def cli(system: System, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "leaderboard.cli", *args],
        env=system.env,
        capture_output=True,
        text=True,
        check=check,
        timeout=180,
    )


async def next_frame(ws: Any, match: Any, within: float = 30) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        while True:
            frame: dict[str, Any] = json.loads(await ws.recv())
            if match(frame):
                return frame

    return await asyncio.wait_for(read(), within)


async def all_boards(kit: Kit, day: str, week: str) -> dict[str, list[tuple[str, int]]]:
    return {
        "global": await kit.entries("global"),
        "daily": await kit.entries("daily", day),
        "weekly": await kit.entries("weekly", week),
        "best-match": await kit.entries("best-match"),
    }


async def redis_boards(kit: Kit, day: str, week: str) -> dict[str, list[tuple[str, int]]]:
    return {
        "global": await kit.redis_entries("global"),
        "daily": await kit.redis_entries("daily", day),
        "weekly": await kit.redis_entries("weekly", week),
        "best-match": await kit.redis_entries("best-match"),
    }


def records(*events: Correction) -> list[tuple[bytes, bytes]]:
    """Corrections as the ingest admin route writes them: keyed by the userId, on the actions topic."""
    return [correction_record(e) for e in events]


def top(frame: dict[str, Any]) -> list[tuple[str, int]]:
    return [(e["userId"], e["score"]) for e in frame["top"]]


async def test_voiding_a_cheater_restoring_renaming_and_replaying(kit: Kit) -> None:
    now = now_ms()
    day, week = CATALOG.boards["daily"].period_at(now), CATALOG.boards["weekly"].period_at(now)
    assert day is not None and week is not None
    honest, cheat = uuid.UUID(int=1 << 100), uuid.UUID(int=2 << 100)
    h, c = str(honest), str(cheat)
    events = [
        kit.action(honest, 40, action_type="match_won", accepted_at=now, username="honest"),
        kit.action(honest, 30, accepted_at=now, username="honest"),
        kit.action(cheat, 900, action_type="match_won", accepted_at=now, username="cheat"),
        kit.action(cheat, 500, accepted_at=now, username="cheat"),
    ]
    await kit.produce([])
    system = kit.start(only=("scorer", "broadcaster"), LEADERBOARD_SERVICE_CAPS="off")
    ws = await websockets.connect(system.ws_url, open_timeout=30, ping_interval=None)
    try:
        await kit.produce(events)
        with_cheat = {
            "global": [(c, 1400), (h, 70)],
            "daily": [(c, 1400), (h, 70)],
            "weekly": [(c, 1400), (h, 70)],
            "best-match": [(c, 900), (h, 40)],
        }
        await next_frame(ws, lambda f: top(f) == with_cheat["global"])
        await kit.eventually(
            lambda: _equal(redis_boards(kit, day.id, week.id), with_cheat), 30, "every board with the cheat"
        )
        assert await all_boards(kit, day.id, week.id) == with_cheat

        void = UserActionsVoided(
            correction_id=uuid.uuid4(), user_id=cheat, reason="aimbot", by="admin-1", at=now_ms()
        )
        await kit.produce(records(void, void))  # a redelivered correction applies once
        without = {"global": [(h, 70)], "daily": [(h, 70)], "weekly": [(h, 70)], "best-match": [(h, 40)]}
        frame = await next_frame(ws, lambda f: top(f) == without["global"])
        if frame["type"] == "update":
            assert c in frame["changed"]
        await kit.eventually(
            lambda: _equal(redis_boards(kit, day.id, week.id), without), 30, "the cheat off every board"
        )
        assert await all_boards(kit, day.id, week.id) == without
        conn = await kit.pg()
        try:
            marks = await conn.fetch(
                "SELECT voided_at, void_reason, voided_by FROM actions WHERE user_id = $1", cheat
            )
            assert len(marks) == 2 and all(
                (m["voided_at"], m["void_reason"], m["voided_by"]) == (void.at, "aimbot", "admin-1")
                for m in marks
            )
            assert await conn.fetchval("SELECT score FROM users WHERE user_id = $1", cheat) == 0
            assert await conn.fetchval("SELECT count(*) FROM corrections") == 1
        finally:
            await conn.close()

        restore = UserActionsRestored(
            correction_id=uuid.uuid4(), user_id=cheat, reason="appeal upheld", by="admin-2", at=now_ms()
        )
        one_void = ActionVoided(
            correction_id=uuid.uuid4(),
            user_id=cheat,
            action_id=events[2].action_id,
            reason="that match was fixed",
            by="admin-2",
            at=now_ms(),
        )
        rename = UserRenamed(
            correction_id=uuid.uuid4(),
            user_id=cheat,
            username="Reformed",
            reason="asked",
            by="admin-2",
            at=now_ms(),
        )
        await kit.produce(records(restore, one_void, rename))
        after = {
            "global": [(c, 500), (h, 70)],
            "daily": [(c, 500), (h, 70)],
            "weekly": [(c, 500), (h, 70)],
            "best-match": [(h, 40)],
        }
        frame = await next_frame(
            ws, lambda f: top(f) == after["global"] and f["top"][0]["username"] == "Reformed"
        )
        await kit.eventually(lambda: _equal(redis_boards(kit, day.id, week.id), after), 30, "restored boards")
        assert await all_boards(kit, day.id, week.id) == after
    finally:
        await ws.close()

    # A replay beside the running scorer: refused into the live stores, identical side by side.
    refused = cli(system, "replay", check=False)
    assert refused.returncode != 0 and "scorer(s) are running" in refused.stderr
    side = cli(system, "replay", "--into", "side", "--compare", check=False)
    assert side.returncode == 0, side.stdout + side.stderr
    assert side.stdout.strip().splitlines()[-1] == "identical"
    summary = json.loads(side.stdout.strip().splitlines()[-2])
    assert summary["corrections"] == 4 and summary["applied"] == 4 and summary["duplicates"] == 1
    assert await all_boards(kit, day.id, week.id) == after  # the live stores untouched

    # A replay into the live stores, the scorer stopped: the log holds the corrections.
    system.supervisor.stop("scorer")
    redis_before = await redis_boards(kit, day.id, week.id)
    live = cli(system, "replay")
    assert json.loads(live.stdout.strip().splitlines()[-1])["corrections"] == 4
    assert await all_boards(kit, day.id, week.id) == after
    assert await redis_boards(kit, day.id, week.id) == redis_before == after
    conn = await kit.pg()
    try:
        assert await conn.fetchval("SELECT username FROM users WHERE user_id = $1", cheat) == "Reformed"
        voided = await conn.fetch("SELECT action_id, void_reason FROM actions WHERE voided_at IS NOT NULL")
        assert [(r["action_id"], r["void_reason"]) for r in voided] == [
            (events[2].action_id, "that match was fixed")
        ]
    finally:
        await conn.close()


async def _equal(got: Any, want: dict[str, list[tuple[str, int]]]) -> bool:
    return bool(await got == want)
