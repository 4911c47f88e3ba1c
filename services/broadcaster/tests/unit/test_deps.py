"""The routes' dependencies: strict number parsing (query, Last-Event-ID, the WebSocket's since and
epoch), bearer auth with a real token verifier, and the reader gate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.websockets import WebSocket

from leaderboard.broadcaster.entrypoints.deps import (
    Around,
    Gate,
    Limit,
    PageNo,
    Resume,
    ResumePoint,
    Since,
    resume_point,
    token_principal,
    ws_resume,
    ws_token,
)
from leaderboard.broadcaster.entrypoints.errors import install
from leaderboard.broadcaster.errors import Invalid, Unauthenticated, VerifierUnavailable
from leaderboard.broadcaster.settings import BroadcasterSettings
from leaderboard.common.auth import TokenVerifier, mint_token
from leaderboard.common.web import install_error_handlers

USER = "00000000-0000-4000-8000-000000000001"
BAD = ["9" * 5_000, "²", "٣", "\uff11", "-1", "+1", " 1", "1_0", "1.0", "1e3", "0x1", ""]


@pytest.fixture
async def numbers() -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    install_error_handlers(app)
    install(app)

    @app.get("/n")
    async def n(
        page: PageNo = 1, limit: Limit = 10, around: Around = 5, since: Since = None
    ) -> dict[str, Any]:
        return {"page": page, "limit": limit, "around": around, "since": since}

    @app.get("/resume")
    async def resume(r: Resume) -> dict[str, Any]:
        return {"since": r.since, "from_header": r.from_header}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b.test") as client:
        yield client


async def test_numbers_are_parsed_strictly_and_bounded(numbers: httpx.AsyncClient) -> None:
    assert (await numbers.get("/n")).json() == {"page": 1, "limit": 10, "around": 5, "since": None}
    ok = await numbers.get("/n", params={"page": "3", "limit": "100", "around": "0", "since": "17"})
    assert ok.json() == {"page": 3, "limit": 100, "around": 0, "since": 17}
    for field, out_of_range in (("page", "0"), ("limit", "101"), ("around", "51")):
        r = await numbers.get("/n", params={field: out_of_range})
        assert r.status_code == 422 and f"field '{field}': must lie in" in r.json()["error"], r.text
    for bad in BAD:
        for field in ("page", "limit", "around", "since"):
            r = await numbers.get("/n", params={field: bad})
            assert r.status_code == 422 and r.json()["code"] == "invalid", (field, bad, r.text)
            assert f"'{field}'" in r.json()["error"]


def test_since_wins_over_last_event_id_which_is_parsed_as_strictly() -> None:
    assert resume_point(None, None) == ResumePoint(None)
    assert resume_point(4, "garbage") == ResumePoint(4)  # a given since: the header is not read
    assert resume_point(None, "7") == ResumePoint(7, from_header=True)
    for bad in ("yesterday", "-1", "1.0", "9" * 40, "Â²"):
        with pytest.raises(Invalid) as refused:
            resume_point(None, bad)
        assert str(refused.value).startswith("header 'Last-Event-ID': ")


async def test_a_bad_last_event_id_is_a_422_naming_the_header(numbers: httpx.AsyncClient) -> None:
    r = await numbers.get("/resume", headers={"Last-Event-ID": "yesterday"})
    assert r.status_code == 422 and r.json()["code"] == "invalid"
    assert r.json()["error"].startswith("header 'Last-Event-ID'")
    assert (await numbers.get("/resume", headers={"Last-Event-ID": "12"})).json() == {
        "since": 12,
        "from_header": True,
    }


def test_websocket_since_and_epoch() -> None:
    assert ws_resume(None, None) is None
    assert ws_resume("0", "e") == 0
    assert ws_resume("42", "a" * 64) == 42
    for bad in BAD:
        with pytest.raises(Invalid) as refused:
            ws_resume(bad, None)
        assert refused.value.name == "since"
    with pytest.raises(Invalid, match="field 'epoch': at most 64 characters"):
        ws_resume("1", "a" * 65)


def verifier(keys_dir: Path) -> TokenVerifier:
    return TokenVerifier(BroadcasterSettings(dev_mode=True, keys_dir=keys_dir))


async def test_authenticate(keys_dir: Path) -> None:
    settings = BroadcasterSettings(dev_mode=True, keys_dir=keys_dir)
    token = mint_token(settings, sub=USER, role="player", ttl_s=600)
    with pytest.raises(VerifierUnavailable):
        await token_principal(None, token)
    with pytest.raises(Unauthenticated, match="missing bearer token"):
        await token_principal(verifier(keys_dir), None)
    with pytest.raises(Unauthenticated):
        await token_principal(verifier(keys_dir), token + "x")
    assert (await token_principal(verifier(keys_dir), token)).sub == USER


def ws(query: str = "", **headers: str) -> WebSocket:
    scope = {
        "type": "websocket",
        "path": "/ws/leaderboard",
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }

    async def nothing(*_: Any) -> Any:
        raise AssertionError("not read")

    return WebSocket(scope, nothing, nothing)


def test_websocket_token_from_query_or_header() -> None:
    assert ws_token(ws("token=q", Authorization="Bearer h")) == "q"  # browsers can only use the query
    assert ws_token(ws(Authorization="Bearer h")) == "h"
    assert ws_token(ws()) is None
    assert ws_token(ws(Authorization="Bearer ")) is None


def gated(p: Any) -> httpx.AsyncClient:
    app = FastAPI()
    install_error_handlers(app)
    install(app)
    app.state.ports = p

    @app.get("/read")
    async def read(_: Gate) -> dict[str, str]:
        return {"ok": "yes"}

    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b.test")


async def test_reader_gate(make_ports: Any) -> None:
    async with gated(make_ports()) as open_:
        assert (await open_.get("/read")).status_code == 200  # reads are open by default
    guarded = make_ports(read_requires_token=True)
    token = mint_token(guarded.settings, sub=USER, role="player", ttl_s=600)
    async with gated(guarded) as client:
        missing = await client.get("/read")
        assert missing.status_code == 401 and missing.json()["code"] == "unauthorized"
        assert missing.headers["www-authenticate"] == "Bearer"
        forged = await client.get("/read", headers={"Authorization": "Bearer not-a-token"})
        assert forged.status_code == 401 and forged.json()["code"] == "unauthorized"
        assert forged.headers["www-authenticate"] == 'Bearer error="invalid_token"'
        ok = await client.get("/read", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
