"""Corrections as an admin makes them, end to end: POST /api/v1/admin/... (admin JWT) puts an event on
the log; the scorer takes the user's actions off (or back onto) every board; the broadcaster pushes the
change to a connected WebSocket and serves it over REST; the corrections are on the log."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import websockets
from aiokafka import AIOKafkaConsumer, TopicPartition

from leaderboard.common.events import iso_ms, now_ms
from leaderboard.common.topics import Topics
from leaderboard.testkit.testing import System


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def quest(user: str, name: str, points: int) -> dict[str, Any]:
    return {
        "actionId": str(uuid.uuid4()),
        "userId": user,
        "username": name,
        "actionType": "quest",
        "occurredAt": iso_ms(now_ms()),
        "points": points,
    }


async def entry(reads: httpx.AsyncClient, user: str, board: str = "global") -> dict[str, Any] | None:
    r = await reads.get(f"/api/v1/leaderboard/users/{user}", params={"board": board})
    return r.json() if r.status_code == 200 else None


def scored(
    reads: httpx.AsyncClient, user: str, expected: int | None, board: str = "global"
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        found = await entry(reads, user, board)
        return (found["score"] if found else None) == expected

    return check


def named(reads: httpx.AsyncClient, user: str, name: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        found = await entry(reads, user)
        return found is not None and found["username"] == name

    return check


async def frame_where(ws: Any, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if predicate(frame):
            return frame


async def corrections_on_log(system: System, user: str) -> list[dict[str, Any]]:
    """The user's corrections on leaderboard.actions.v1, read to the end (until polls come back empty)."""
    topic = Topics(system.env["LEADERBOARD_TOPIC_PREFIX"]).actions
    consumer = AIOKafkaConsumer(bootstrap_servers=system.env["LEADERBOARD_KAFKA_BOOTSTRAP"], group_id=None)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        quiet, deadline = 0, time.monotonic() + 20
        while quiet < 3 and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            quiet = 0 if batch else quiet + 1
            for records in batch.values():
                for r in records:
                    event = json.loads(r.value)
                    kind = event.get("eventType") or "ActionCompleted"
                    if event.get("userId") == user and kind != "ActionCompleted":
                        found.append(event)
    finally:
        await consumer.stop()
    return found


async def test_an_admin_voids_restores_and_renames_through_the_api(system: System) -> None:
    cheater, honest = str(uuid.uuid4()), str(uuid.uuid4())
    service = {"Authorization": f"Bearer {system.token(role='service', name='game')}"}
    admin_sub = str(uuid.uuid4())
    admin = {"Authorization": f"Bearer {system.token(admin_sub, role='admin', name='ops')}"}
    player = {"Authorization": f"Bearer {system.token(role='player')}"}
    first = quest(cheater, "Cheater", 400)
    events = [first, quest(cheater, "Cheater", 450), quest(honest, "Honest", 300)]
    async with (
        httpx.AsyncClient(base_url=system.ingest_url, timeout=15) as ingest,
        httpx.AsyncClient(base_url=system.broadcaster_url, timeout=15) as reads,
    ):
        r = await ingest.post("/api/v1/events", json={"events": events}, headers=service)
        assert r.status_code == 202, r.text
        await until(scored(reads, cheater, 850), "the cheater's 850 on the board")
        await until(scored(reads, cheater, 850, "daily"), "the cheater's 850 today")

        void_url = f"/api/v1/admin/users/{cheater}/void"
        refused = await ingest.post(void_url, json={"reason": "x"}, headers=player)
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        invalid = await ingest.post(void_url, json={"reason": ""}, headers=admin)
        assert invalid.status_code == 422 and "reason" in invalid.json()["error"]

        async with websockets.connect(system.ws_url, open_timeout=10) as ws:
            await frame_where(ws, lambda f: any(e["userId"] == cheater for e in f["top"]))
            voided = await ingest.post(void_url, json={"reason": "speed hack"}, headers=admin)
            assert voided.status_code == 202, voided.text
            body = voided.json()
            assert body["status"] == "accepted" and body["eventType"] == "UserActionsVoided"
            gone = await frame_where(ws, lambda f: all(e["userId"] != cheater for e in f["top"]))
            assert any(e["userId"] == honest for e in gone["top"])
        await until(scored(reads, cheater, None), "the cheater off the global board")
        await until(scored(reads, cheater, None, "daily"), "the cheater off today's board")
        assert (await entry(reads, honest) or {}).get("score") == 300

        restore = {"reason": "appeal upheld"}
        restored = await ingest.post(f"/api/v1/admin/users/{cheater}/restore", json=restore, headers=admin)
        assert restored.status_code == 202, restored.text
        await until(scored(reads, cheater, 850), "the cheater back with 850")

        one = await ingest.post(
            f"/api/v1/admin/actions/{first['actionId']}/void",
            json={"userId": cheater, "reason": "duplicate report"},
            headers=admin,
        )
        assert one.status_code == 202 and one.json()["eventType"] == "ActionVoided"
        await until(scored(reads, cheater, 450), "one action off: 450")

        rename = {"username": "Reformed", "reason": "offensive name"}
        renamed = await ingest.post(f"/api/v1/admin/users/{cheater}/rename", json=rename, headers=admin)
        assert renamed.status_code == 202
        await until(named(reads, cheater, "Reformed"), "the new name on the board")

    logged = await corrections_on_log(system, cheater)
    kinds = [e["eventType"] for e in logged]
    assert kinds == ["UserActionsVoided", "UserActionsRestored", "ActionVoided", "UserRenamed"]
    assert all(e["by"] == admin_sub for e in logged)
    assert logged[0]["reason"] == "speed hack" and logged[2]["actionId"] == first["actionId"]
