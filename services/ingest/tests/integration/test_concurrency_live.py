"""Exactly once under contention, through HTTP against the running ingest and read back from Kafka."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import httpx

from leaderboard.testkit.processes import free_port
from leaderboard.testkit.services import ServiceSpec, leaderboard_cmd

SETTLE = 1.4


async def test_50_concurrent_completions_of_one_ticket_give_one_event(open_rig: Any) -> None:
    rig = open_rig
    player = rig.player("Racer")
    ticket = await rig.start(player)
    await asyncio.sleep(SETTLE)
    responses = await asyncio.gather(*(rig.complete(player.token, ticket["actionId"]) for _ in range(50)))

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {202: 1, 409: 49}, statuses
    winner = next(r for r in responses if r.status_code == 202).json()
    for loser in (r for r in responses if r.status_code == 409):
        body = loser.json()
        assert body["code"] == "ticket_used" and body["eventId"] == winner["eventId"], body

    log = await rig.read_topic(rig.topics.actions)
    mine = [e for e in log if e["actionId"] == ticket["actionId"]]
    assert len(mine) == 1, mine
    event = mine[0]
    assert event["eventId"] == winner["eventId"] and event["userId"] == player.user_id
    assert event["points"] == ticket["points"] and event["source"] == "player"
    assert event["key"] == player.user_id.encode()


async def test_concurrent_service_batches_with_one_action_id_accept_it_once(open_rig: Any) -> None:
    rig = open_rig
    services = [rig.service() for _ in range(20)]
    action_id, user = str(uuid.uuid4()), str(uuid.uuid4())
    event = {"actionId": action_id, "userId": user, "actionType": "trial", "occurredAt": int(time.time())}
    responses = await asyncio.gather(
        *(rig.http.post("/api/v1/events", json={"events": [event]}, headers=s.headers) for s in services)
    )
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses]
    bodies = Counter((r.json()["accepted"], r.json()["duplicates"]) for r in responses)
    assert bodies == {(1, 0): 1, (0, 1): 19}, bodies
    log = await rig.read_topic(rig.topics.actions)
    assert len([e for e in log if e["actionId"] == action_id]) == 1


async def test_two_ingest_replicas_share_one_ticket_state(open_rig: Any, tmp_path: Any) -> None:
    """Stateless replicas: a race spread over two ingest processes still yields one completion."""
    rig, system = open_rig, open_rig.system
    port = free_port()
    spec = ServiceSpec(
        "ingest-2",
        leaderboard_cmd("ingest", "--port", str(port)),
        dict(system.env),
        f"http://127.0.0.1:{port}/readyz",
        tmp_path / "ingest-2.log",
    )
    system.supervisor.start(spec)
    try:
        await asyncio.to_thread(system.supervisor.wait_ready, "ingest-2")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as second:
            player = rig.player("Twin")
            ticket = await rig.start(player)  # issued by one replica ...
            await asyncio.sleep(SETTLE)
            body = {"actionId": ticket["actionId"], "timestamp": int(time.time())}
            responses = await asyncio.gather(
                *(
                    (rig.http if i % 2 else second).post(
                        "/api/v1/score/update", json=body, headers=player.headers
                    )
                    for i in range(40)
                )  # ... completed through both
            )
        assert Counter(r.status_code for r in responses) == {202: 1, 409: 39}
        log = await rig.read_topic(rig.topics.actions)
        assert len([e for e in log if e["actionId"] == ticket["actionId"]]) == 1
    finally:
        await asyncio.to_thread(system.supervisor.stop, "ingest-2")
