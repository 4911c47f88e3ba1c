"""Pages below the top N through the real path (ingest, the scorer, Redis, the broadcaster): a deep page
is kept per state of its board and served again while the board stands still, and the first read after
any write to the board (one below the top included) answers the new state, with the new ETag."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from leaderboard.testkit.testing import Namespace, System, running_system
from leaderboard.testkit.testing import service_event as event

USERS = 25  # the top N is 10: pages 2 and 3 of limit 10 are deep


@pytest.fixture(scope="module")
def system(base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(
        Namespace.create(base_env),
        tmp_path_factory.mktemp("deep-logs"),
        extra_env={"LEADERBOARD_BOARDS": '["global"]'},
    ) as s:
        yield s


async def deep_reads(client: httpx.AsyncClient, source: str) -> float:
    text = (await client.get("/metrics")).text
    name = f'broadcaster_deep_page_reads_total{{source="{source}"}}'
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


async def page_until(client: httpx.AsyncClient, want: Any, **params: int) -> httpx.Response:
    """The page once ``want(body)`` holds (the scorer applies asynchronously), within 30 s."""
    for _ in range(300):
        r = await client.get("/api/v1/leaderboard", params=params)
        assert r.status_code == 200, r.text
        if want(r.json()):
            return r
        await asyncio.sleep(0.1)
    raise AssertionError(f"the page never reached the expected state: {r.json()}")


async def test_a_deep_page_is_kept_while_its_board_stands_still_and_follows_every_write(
    system: System,
) -> None:
    service = system.token(role="service", sub=str(uuid.uuid4()), name="game-backend")
    users = [str(uuid.uuid4()) for _ in range(USERS)]
    names = {u: f"Deep {i:02d}" for i, u in enumerate(users)}
    scores = {u: 400 - 10 * i for i, u in enumerate(users)}  # distinct: rank i + 1
    async with (
        httpx.AsyncClient(
            base_url=system.ingest_url, timeout=30, headers={"Authorization": f"Bearer {service}"}
        ) as ingest,
        httpx.AsyncClient(base_url=system.broadcaster_url, timeout=30) as reads,
    ):
        sent = await ingest.post(
            "/api/v1/events", json={"events": [event(u, scores[u], names[u]) for u in users]}
        )
        assert sent.status_code == 202, sent.text
        first = await page_until(reads, lambda b: b["total"] == USERS, page=2, limit=10)
        body = first.json()
        assert [e["userId"] for e in body["leaderboard"]] == users[10:20]
        assert [e["rank"] for e in body["leaderboard"]] == list(range(11, 21))

        # The board stands still: the same bytes and ETag again, from the kept page.
        kept_before = await deep_reads(reads, "kept")
        for _ in range(5):
            again = await reads.get("/api/v1/leaderboard", params={"page": 2, "limit": 10})
            assert again.content == first.content and again.headers["etag"] == first.headers["etag"]
        assert await deep_reads(reads, "kept") - kept_before >= 4  # the first of the five may be a read
        not_modified = await reads.get(
            "/api/v1/leaderboard",
            params={"page": 2, "limit": 10},
            headers={"If-None-Match": first.headers["etag"]},
        )
        assert not_modified.status_code == 304

        # A write below the top (rank 25 climbs to rank 11 with 305, between 310 and 300; the top N
        # unchanged): the kept page must
        # not outlive it. With the page kept by anything but the board's state, this never arrives.
        climber = users[-1]
        bump = await ingest.post("/api/v1/events", json={"events": [event(climber, 145, names[climber])]})
        assert bump.status_code == 202, bump.text
        moved = await page_until(reads, lambda b: b["leaderboard"][0]["userId"] == climber, page=2, limit=10)
        entries = moved.json()["leaderboard"]
        assert entries[0]["score"] == scores[climber] + 145 and entries[0]["rank"] == 11
        assert [e["userId"] for e in entries[1:]] == users[10:19]
        assert moved.headers["etag"] != first.headers["etag"]
        # The old ETag is no longer current: a client holding it gets the new page.
        stale = await reads.get(
            "/api/v1/leaderboard",
            params={"page": 2, "limit": 10},
            headers={"If-None-Match": first.headers["etag"]},
        )
        assert stale.status_code == 200 and stale.content == moved.content
        # The top N did not change, so the hub's pages kept their version.
        top = (await reads.get("/api/v1/leaderboard")).json()
        assert top["version"] == body["version"]
        # Other deep pages of the same board follow the write too (rank 20 moved to page 3).
        third = (await reads.get("/api/v1/leaderboard", params={"page": 3, "limit": 10})).json()
        assert [e["userId"] for e in third["leaderboard"]] == users[19:24]
