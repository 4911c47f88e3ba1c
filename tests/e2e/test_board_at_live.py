"""A board as it was at a past moment (issue 11): two batches through ingest with a known time T between
them; the board the broadcaster served after the first batch is what ``leaderboard board --at T``
prints after the second batch (and a correction decided after T) have been applied, for an all-time
sum board and a best-of board, while ``--at`` a time after both shows the newer board."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from leaderboard.common.events import ActionVoided, correction_record, iso_ms, now_ms
from leaderboard.common.kafka import producer
from leaderboard.common.topics import Topics
from leaderboard.testkit.testing import Namespace, System, running_system, wait_until

CLI = (sys.executable, "-m", "leaderboard.cli")


@pytest.fixture
def live(base_env: dict[str, str], tmp_path: Path) -> Iterator[System]:
    env = {"LEADERBOARD_SERVICE_CAPS": "off"}
    with running_system(Namespace.create(base_env), tmp_path / "logs", extra_env=env) as system:
        yield system


def post(system: System, token: str, sent: list[tuple[str, str, int]]) -> list[str]:
    events: list[dict[str, Any]] = [
        {
            "actionId": str(uuid.uuid4()),
            "userId": user,
            "username": f"p-{user[:4]}",
            "actionType": kind,
            "occurredAt": datetime.now(UTC).isoformat(),
            "points": points,
        }
        for user, kind, points in sent
    ]
    reply = httpx.post(
        f"{system.ingest_url}/api/v1/events",
        json={"events": events},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert reply.status_code == 202, reply.text
    return [e["actionId"] for e in events]


def served(system: System, board: str) -> list[tuple[int, str, str, int]]:
    body = httpx.get(
        f"{system.broadcaster_url}/api/v1/leaderboard", params={"board": board, "limit": 100}, timeout=10
    ).json()
    return [(e["rank"], e["userId"], e["username"], e["score"]) for e in body.get("leaderboard", [])]


def board_at(system: System, board: str, at: str) -> list[tuple[int, str, str, int]]:
    out = subprocess.run(
        [*CLI, "board", "--at", at, "--board", board, "--format", "json", "--limit", "100"],
        env=system.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    body: dict[str, Any] = json.loads(out)
    return [(e["rank"], e["userId"], e["username"], e["score"]) for e in body["leaderboard"]]


def test_board_at_a_time_between_two_batches_is_the_board_that_was_live(live: System) -> None:
    token = live.token(str(uuid.uuid4()), role="service", name="history-backend")
    a, b, c = (str(uuid.uuid4()) for _ in range(3))
    first = post(
        live, token, [(a, "quest", 50), (b, "match_won", 70), (c, "match_won", 20), (a, "match_won", 30)]
    )
    wait_until(lambda: len(served(live, "global")) == 3 and len(served(live, "best-match")) == 3, 60)
    then = {board: served(live, board) for board in ("global", "best-match")}
    assert [s for _, _, _, s in then["global"]] == [80, 70, 20]
    at = now_ms()
    while now_ms() <= at:  # every event of the second batch is accepted after T
        time.sleep(0.005)

    post(live, token, [(c, "match_won", 100), (b, "quest", 5), (a, "quest", 1)])
    wait_until(lambda: [s for _, _, _, s in served(live, "global")] == [120, 81, 75], 60)

    async def void() -> None:  # a correction decided after T leaves the board at T alone
        async with producer(live.ns.settings()) as p:
            key, value = correction_record(
                ActionVoided(
                    correction_id=uuid.uuid4(),
                    user_id=uuid.UUID(a),
                    action_id=uuid.UUID(first[0]),
                    reason="test",
                    by="admin",
                    at=now_ms(),
                )
            )
            await p.send_and_wait(Topics(live.ns.settings().topic_prefix).actions, value, key=key)

    asyncio.run(void())
    wait_until(lambda: [s for _, _, _, s in served(live, "global")] == [120, 75, 31], 60)
    now = served(live, "global")

    for board in ("global", "best-match"):
        assert board_at(live, board, iso_ms(at)) == then[board], board
    assert board_at(live, "global", iso_ms(now_ms())) == now
