"""The hot read path's pure parts: which queries it answers itself, entries built straight from rank
members (the same JSON as ``ranked_entries``), and ``/scores`` answered from the hub's top without
Redis (the unit ports' Redis refuses every connection) with its ETag and 304."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from leaderboard.broadcaster.adapters.reads import page_entries
from leaderboard.broadcaster.entrypoints.hot import Query, TopReads, encode, parse_query
from leaderboard.broadcaster.hub import BoardState
from leaderboard.common.ranking import RankKey, ranked_entries


def test_only_plainly_valid_queries_are_parsed() -> None:
    assert parse_query(b"") == Query()
    assert parse_query(b"page=3&limit=5&sort=asc&board=daily") == Query("daily", 3, 5, False)
    assert parse_query(b"sort=DeSc") == Query()
    for raw in (
        b"page=0",
        b"limit=101",
        b"page=%C2%B2",
        b"page=1&page=2",
        b"other=1",
        b"board=Nope",
        b"sort=up",
        b"page",
        b"page=+1",
        b"limit=9" + b"9" * 40,
    ):
        assert parse_query(raw) is None, raw


def test_page_entries_match_ranked_entries() -> None:
    users = [str(uuid.uuid4()) for _ in range(4)]
    members = [RankKey(900 - i, 1_700_000_000_000 + i, u).member().encode() for i, u in enumerate(users)]
    names: list[bytes | None] = [b"Ann", None, "Zo\u00eb".encode(), b"Bo"]
    expected = [
        e.model_dump(mode="json", by_alias=True)
        for e in ranked_entries(list(zip(members, names, strict=True)), 7, -1)
    ]
    assert page_entries(members, names, 7, -1) == expected


def test_encoding_matches_json_response() -> None:
    from fastapi.responses import JSONResponse

    body: dict[str, Any] = {"a": ["Zo\u00eb", 1], "b": None}
    assert encode(body) == bytes(JSONResponse(body).body)


async def test_scores_come_from_the_hub_without_redis(make_ports: Any) -> None:
    p = make_ports()
    top = [
        {"rank": i + 1, "userId": str(uuid.uuid4()), "username": f"P{i}", "score": 99 - i} for i in range(12)
    ]
    p.hub.publish(BoardState("global", "ep", 4, top))
    app = FastAPI()
    app.add_middleware(TopReads)
    app.state.ports = p
    calls: list[str] = []

    @app.get("/scores")
    async def scores() -> list[Any]:
        calls.append("route")
        return []

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b.test") as c:
        r = await c.get("/scores")
        assert r.status_code == 200 and r.json() == top[:10] and r.headers["etag"] == 'W/"ep.4"'
        assert (
            r.headers["cache-control"] == "public, max-age=1"
            and r.headers["content-type"] == "application/json"
        )
        again = await c.get("/scores", headers={"If-None-Match": '"ep.4"'})
        assert again.status_code == 304 and again.content == b""
        assert calls == []
        await c.get("/scores?x=1")  # anything else is the route's
        assert calls == ["route"]
    p.hub.publish(BoardState("global", "ep", 5, top[1:]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b.test") as c:
        moved = await c.get("/scores", headers={"If-None-Match": '"ep.4"'})
        assert moved.status_code == 200 and json.loads(moved.content) == top[1:11]
