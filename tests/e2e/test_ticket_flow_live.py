"""End to end, as a user sees it: a player completes an action through the ticket flow and the
score appears on a WebSocket that was connected before, and in the REST board."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
import websockets

from leaderboard.testkit.testing import System


def cli_token(system: System, sub: str, name: str) -> str:
    """The token a developer would get from `leaderboard token` (last line of stdout)."""
    out = subprocess.run(
        [sys.executable, "-m", "leaderboard.cli", "token", "--sub", sub, "--role", "player", "--name", name],
        env=system.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.strip().splitlines()[-1]


async def complete_action(client: httpx.AsyncClient, token: str, action_type: str) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}"}
    started = await client.post("/api/v1/actions", json={"actionType": action_type}, headers=headers)
    assert started.status_code == 201, started.text
    ticket = started.json()
    catalog = {a["actionType"]: a for a in (await client.get("/api/v1/catalog")).json()["actions"]}
    await asyncio.sleep(catalog[action_type]["minSeconds"] + 0.3)
    done = await client.post(
        "/api/v1/score/update",
        json={"actionId": ticket["actionId"], "timestamp": int(time.time())},
        headers=headers,
    )
    assert done.status_code == 202, done.text
    body = done.json()
    assert body["status"] == "success" and body["actionId"] == ticket["actionId"]
    return {"ticket": ticket, "done": body}


async def test_completed_action_reaches_connected_websocket_and_rest_board(system: System) -> None:
    user_id = str(uuid.uuid4())
    token = cli_token(system, user_id, "E2E Hero")
    async with (
        websockets.connect(system.ws_url, open_timeout=10) as ws,
        httpx.AsyncClient(base_url=system.ingest_url, timeout=10) as ingest,
    ):
        # The socket is live before the action happens; its first frame may be a snapshot of an empty
        # board or none at all (no board yet), so read until our user appears.
        result = await complete_action(ingest, token, "match_won")
        points = result["ticket"]["points"]  # type: ignore[index]

        async def our_frame() -> dict[str, Any]:
            while True:
                frame: dict[str, Any] = json.loads(await ws.recv())
                assert frame["type"] in ("snapshot", "update")
                if any(e["userId"] == user_id for e in frame["top"]):
                    return frame

        frame = await asyncio.wait_for(our_frame(), timeout=60)
    entry = next(e for e in frame["top"] if e["userId"] == user_id)
    assert entry["score"] == points
    assert entry["username"] == "E2E Hero"
    assert frame["board"] == "global" and isinstance(frame["version"], int) and frame["epoch"]

    async with httpx.AsyncClient(base_url=system.broadcaster_url, timeout=10) as reads:
        board = (await reads.get("/api/v1/leaderboard", params={"limit": 100})).json()
        mine = [e for e in board["leaderboard"] if e["userId"] == user_id]
        assert mine and mine[0]["score"] == points
        assert set(board) >= {"leaderboard", "page", "limit", "sort", "version"}
        assert board["sort"] == "DESC" and board["page"] == 1 and board["limit"] == 100
        ranks = [e["rank"] for e in board["leaderboard"]]
        assert ranks == list(range(1, len(ranks) + 1))
        me = await reads.get(f"/api/v1/leaderboard/users/{user_id}")
        assert me.status_code == 200 and me.json()["score"] == points


async def test_wait_true_returns_the_new_score(system: System) -> None:
    user_id = str(uuid.uuid4())
    token = system.token(user_id, name="Waiter")
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=system.ingest_url, timeout=10) as ingest:
        started = (
            await ingest.post("/api/v1/actions", json={"actionType": "match_won"}, headers=headers)
        ).json()
        await asyncio.sleep(1.3)
        # The bounded wait may lapse on a loaded machine (then 202 without newScore), so retry the read side.
        done = await ingest.post(
            "/api/v1/score/update?wait=true",
            headers=headers,
            json={"actionId": started["actionId"], "timestamp": int(time.time())},
        )
        assert done.status_code in (200, 202), done.text
        if done.status_code == 200:
            assert done.json()["newScore"] == started["points"]
        again = await ingest.post(
            "/api/v1/score/update",
            headers=headers,
            json={"actionId": started["actionId"], "timestamp": int(time.time())},
        )
        assert again.status_code == 409 and again.json()["code"] == "ticket_used"
        assert again.json()["eventId"] == done.json()["eventId"]
