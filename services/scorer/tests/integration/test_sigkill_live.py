"""The issue's fault test: 20,000 events over 500 users, 10% of them repeating an actionId, go through
the ingest service's batch endpoint while the scorer is SIGKILLed at random moments (at least five
times) and restarted. Afterwards every user's score in Postgres, in Redis and in the broadcaster's
GET /api/v1/leaderboard is the sum of the points of the distinct actionIds sent for them."""

from __future__ import annotations

import asyncio
import random
import signal
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:  # pytest imports conftest itself (importlib mode); mypy knows it by path
    from services.scorer.tests.integration.conftest import Kit

EVENTS = 20_000
USERS = 500
DUPLICATE_SHARE = 0.10
BATCH = 500
KILLS = 5


def plan(rng: random.Random, catalog: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The events to send, in order (repeats included), and the expected score per user."""
    users = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(USERS)]
    distinct = EVENTS - int(EVENTS * DUPLICATE_SHARE)
    originals: list[dict[str, Any]] = []
    expected: dict[str, int] = {}
    for i in range(distinct):
        user = users[i % USERS]
        spec = catalog[i % len(catalog)]
        points = 1 + rng.randrange(spec["maxPoints"])
        originals.append(
            {
                "actionId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "userId": str(user),
                "username": f"player-{i % USERS:03d}",
                "actionType": spec["actionType"],
                "points": points,
            }
        )
        expected[str(user)] = expected.get(str(user), 0) + points
    events = list(originals)
    for _ in range(EVENTS - distinct):  # a repeat lands after its original, in a later or the same batch
        at = rng.randrange(len(events))
        events.insert(at + 1 + rng.randrange(min(2 * BATCH, len(events) - at)), dict(events[at]))
    assert len(events) == EVENTS and len({e["actionId"] for e in events}) == distinct
    return events, expected


@pytest.mark.slow
async def test_sigkilled_scorer_loses_nothing_and_counts_nothing_twice(kit: Kit) -> None:
    rng = random.Random(20_000)
    system = kit.start(
        only=("ingest", "broadcaster", "scorer"),
        LEADERBOARD_RATE_SERVICE_PER_MIN="1000000",
        LEADERBOARD_RATE_SERVICE_BURST="100000",
        LEADERBOARD_RATE_IP_PER_MIN="1000000",
        LEADERBOARD_RATE_IP_BURST="100000",
        LEADERBOARD_BATCH_SIZE="500",  # more, smaller batches: more moments for a kill to land in
        LEADERBOARD_SERVICE_CAPS="off",  # 36 events per user over 4 types: exactly-once, not caps, is tested
    )
    token = system.token(str(uuid.uuid4()), role="service", name="fault-test-backend")
    async with httpx.AsyncClient(base_url=system.ingest_url, timeout=60) as ingest:
        catalog = (await ingest.get("/api/v1/catalog")).json()["actions"]
        events, expected = plan(rng, catalog)
        batches = [events[i : i + BATCH] for i in range(0, len(events), BATCH)]
        accepted = duplicates = 0
        sent_done = asyncio.Event()

        async def send() -> None:
            nonlocal accepted, duplicates
            try:
                for batch in batches:
                    occurred = datetime.now(UTC).isoformat()
                    body = {"events": [{**e, "occurredAt": occurred} for e in batch]}
                    reply = await ingest.post(
                        "/api/v1/events", json=body, headers={"Authorization": f"Bearer {token}"}
                    )
                    assert reply.status_code == 202, reply.text
                    accepted += reply.json()["accepted"]
                    duplicates += reply.json()["duplicates"]
                    await asyncio.sleep(rng.uniform(0.1, 0.6))  # spread the load over the kills
            finally:
                sent_done.set()

        sender = asyncio.create_task(send())
        kills = 0
        applied_at_kill: list[int] = []
        try:
            while (kills < KILLS or not sent_done.is_set()) and not (sender.done() and sender.exception()):
                await asyncio.sleep(rng.uniform(0.3, 2.5))  # a random moment of a running scorer
                run = system.supervisor.running["scorer"]
                run.proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(run.proc.wait, 30)
                kills += 1
                applied_at_kill.append(await kit.applied_count())
                await asyncio.to_thread(system.restart, "scorer")
        finally:
            await sender
    assert accepted + duplicates == EVENTS and accepted == len({e["actionId"] for e in events})
    assert kills >= KILLS
    # The kills met a scorer at work: the stores moved between them.
    assert len(set(applied_at_kill)) > 1, applied_at_kill

    async def projected() -> bool:
        return bool(await kit.applied_count() == accepted)

    await kit.eventually(projected, 120, f"all {accepted} actions in Postgres")

    async def redis_done() -> bool:
        return bool(dict(await kit.redis_board()) == expected)

    await kit.eventually(redis_done, 60, "Redis to hold the expected scores")
    pg = await kit.pg_board()
    assert dict(pg) == expected
    assert await kit.redis_board() == pg  # the same order too

    async def read_board() -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        async with httpx.AsyncClient(base_url=system.broadcaster_url, timeout=30) as reads:
            for page in range(1, USERS // 100 + 2):
                body = (await reads.get("/api/v1/leaderboard", params={"page": page, "limit": 100})).json()
                out += [(e["userId"], e["score"]) for e in body["leaderboard"]]
        return out

    async def broadcaster_done() -> bool:
        return await read_board() == pg

    await kit.eventually(broadcaster_done, 60, "the broadcaster's board to equal Postgres")
    board = await read_board()
    assert len(board) == USERS and dict(board) == expected
    # Every board of the catalog counted each action once too (issue 10), in Postgres and Redis.
    counts = await kit.check_all_boards()
    assert counts[("global", "all")] == USERS and counts[("best-match", "all")] > 0


def test_plan_is_what_the_issue_asks() -> None:
    catalog = [{"actionType": "quest", "maxPoints": 100}, {"actionType": "match_won", "maxPoints": 50}]
    events, expected = plan(random.Random(1), catalog)
    ids = [e["actionId"] for e in events]
    assert len(events) == EVENTS and len(expected) == USERS
    assert len(ids) - len(set(ids)) == EVENTS * DUPLICATE_SHARE
    firsts: dict[str, dict[str, Any]] = {}
    for e in events:
        firsts.setdefault(e["actionId"], e)
    assert sum(e["points"] for e in firsts.values()) == sum(expected.values())
