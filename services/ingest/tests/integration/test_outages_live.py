"""Ingest when its stores fail, each test on a server of its own (so no other test sees the outage):

- Kafka: the embedded broker (Tansu, log in memory) is frozen with SIGSTOP while players complete
  actions, then thawed with SIGCONT. Requests get 503 + Retry-After, every 2xx has its event in the
  log, no ticket is burned without its event, and ingest serves again.
- Redis: stopped, then started again. Ingest fails closed: 503 + Retry-After for every write and every
  authentication (tickets and rate limits live there), nothing reaches the log, and it serves again.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

SETTLE = 1.4


@dataclass
class Attempt:
    action_id: str
    player: Any
    status: int
    body: dict[str, Any]
    retry_after: str | None
    phase: str


@pytest.mark.slow
async def test_broker_frozen_mid_run(isolated: Any) -> None:
    iso = await isolated("kafka", LEADERBOARD_KAFKA_SEND_TIMEOUT_S="2")
    rig = iso.rig
    players = [rig.player(f"Runner {i}") for i in range(12)]
    attempts: list[Attempt] = []
    phase = "before"
    stop_at = float("inf")

    async def worker(player: Any) -> None:
        while time.monotonic() < stop_at:
            ticket = await rig.start(player)  # Redis only: works through the Kafka outage
            await asyncio.sleep(SETTLE)
            seen = phase
            try:
                r = await rig.complete(player.token, ticket["actionId"])
                status, body = r.status_code, r.json()
                retry = r.headers.get("retry-after")
            except httpx.TimeoutException:
                status, body, retry = 0, {}, None
            attempts.append(Attempt(ticket["actionId"], player, status, body, retry, seen))

    async def until(what: str, check: Any, within: float = 90.0) -> None:
        deadline = time.monotonic() + within
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            assert not any(w.done() and w.exception() for w in workers), [w.exception() for w in workers]
            await asyncio.sleep(0.2)

    workers = [asyncio.create_task(worker(p)) for p in players]
    try:
        await until("a completion before the outage", lambda: any(a.status == 202 for a in attempts))
        iso.freeze()
        phase = "frozen"
        await until("a 503 during the outage", lambda: any(a.status == 503 for a in attempts))
        await asyncio.sleep(3)  # more requests meet the frozen broker, some of them mid-send
        iso.thaw()
        phase = "after"
        # Serving again: a completion sent after the thaw is accepted.
        await until(
            "a completion after SIGCONT",
            lambda: any(a.phase == "after" and a.status == 202 for a in attempts),
        )
        stop_at = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*workers), 60)
    finally:
        for w in workers:
            w.cancel()

    statuses = {a.status for a in attempts}
    assert statuses <= {202, 503}, sorted(statuses)
    assert any(a.phase == "before" and a.status == 202 for a in attempts)
    unavailable = [a for a in attempts if a.status == 503]
    assert unavailable, "no request met the outage"
    for a in unavailable:
        assert a.body["code"] == "unavailable" and a.body["status"] == "error"
        assert a.retry_after is not None and int(a.retry_after) >= 1

    # No ticket is burned without its event: every refused one either completes now or, if its event
    # reached the log after all, says so with that event's id.
    retried: dict[str, dict[str, Any]] = {}
    for a in unavailable:
        r = await rig.complete(a.player.token, a.action_id)
        assert r.status_code in (202, 409), r.text
        retried[a.action_id] = {"status": r.status_code, **r.json()}

    log = await rig.read_topic(rig.topics.actions)
    events = {e["eventId"]: e for e in log}
    for a in attempts:
        if a.status == 202:
            assert a.body["eventId"] in events, "a 2xx without its event in the log"
            assert events[a.body["eventId"]]["actionId"] == a.action_id
    for action_id, outcome in retried.items():
        assert outcome["eventId"] in events, outcome
        assert events[outcome["eventId"]]["actionId"] == action_id


async def test_redis_down_fails_closed_then_recovers(isolated: Any) -> None:
    iso = await isolated("redis")
    rig = iso.rig
    player, service = rig.player("Steady"), rig.service()
    ticket = await rig.start(player)
    await asyncio.sleep(SETTLE)
    control = await rig.complete(player.token, ticket["actionId"])
    assert control.status_code == 202, control.text
    before = len(await rig.read_topic(rig.topics.actions))

    await asyncio.to_thread(iso.stop_store)
    bad_token = rig.sign(rig.header(), rig.claims(player.user_id, iss="someone-else"))
    event = {
        "actionId": str(uuid.uuid4()),
        "userId": player.user_id,
        "actionType": "trial",
        "occurredAt": int(time.time()),
    }
    answers = {
        "start": await rig.http.post("/api/v1/actions", json={"actionType": "trial"}, headers=player.headers),
        "complete": await rig.complete(player.token, str(uuid.uuid4())),
        "events": await rig.http.post("/api/v1/events", json={"events": [event]}, headers=service.headers),
        "score": await rig.http.post(
            "/score", json={"userId": player.user_id, "increment": 5}, headers=service.headers
        ),
        "bad_token": await rig.http.post(
            "/api/v1/actions", json={"actionType": "trial"}, headers={"Authorization": f"Bearer {bad_token}"}
        ),
    }
    for name, r in answers.items():
        assert r.status_code == 503, (name, r.text)
        assert r.json()["code"] == "unavailable", (name, r.text)
        assert int(r.headers["retry-after"]) >= 1, name
    ready = await rig.http.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["redis"] != "ok"
    assert len(await rig.read_topic(rig.topics.actions)) == before  # nothing half-done reached the log

    await asyncio.to_thread(iso.start_store)
    deadline = time.monotonic() + 60
    while (await rig.http.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, "ingest did not recover after Redis came back"
        await asyncio.sleep(0.5)
    ticket = await rig.start(player)
    await asyncio.sleep(SETTLE)
    done = await rig.complete(player.token, ticket["actionId"])
    assert done.status_code == 202, done.text
    again = await rig.http.post("/api/v1/events", json={"events": [event]}, headers=service.headers)
    assert again.status_code == 202 and again.json() == {"accepted": 1, "duplicates": 0}
