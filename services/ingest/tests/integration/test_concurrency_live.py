"""Exactly once under contention, through HTTP against the running ingest and read back from Kafka."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

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
