"""Route handlers that hold logic, without a stack: ETags and If-None-Match, WebSocket admission and
close frames, the SSE stream (and its end when the instance drains), readiness, the demo page, and the
live endpoint's refusals and drain through Starlette's test client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.websockets import WebSocket

from leaderboard.broadcaster.adapters.reads import Meta
from leaderboard.broadcaster.bootstrap import Ports
from leaderboard.broadcaster.entrypoints.app import readiness
from leaderboard.broadcaster.entrypoints.errors import install
from leaderboard.broadcaster.entrypoints.routes import live, page
from leaderboard.broadcaster.entrypoints.routes.live import Admission, admit, close_frame
from leaderboard.broadcaster.entrypoints.routes.reads import cached, etag_for, not_modified
from leaderboard.broadcaster.entrypoints.routes.stream import SseStream
from leaderboard.broadcaster.errors import (
    Draining,
    Invalid,
    OriginRefused,
    TooManyFromAddress,
    Unauthenticated,
    UnknownBoard,
)
from leaderboard.broadcaster.hub import BoardState
from leaderboard.common.auth import mint_token
from leaderboard.common.web import RequestIdMiddleware, install_error_handlers

MakePorts = Any
META = Meta("ep", 7, 19, [])


def test_etags_name_the_version_inside_the_top_and_the_rev_below() -> None:
    assert etag_for(META, within_top=True) == 'W/"ep.7"'
    assert etag_for(META, within_top=False) == 'W/"ep.7.19"'


@pytest.mark.parametrize(
    "header, matches",
    [
        (None, False),
        ("", False),
        ('W/"ep.7"', True),
        ('"ep.7"', True),  # weak comparison: the opaque tag alone matches
        ('W/"ep.6", W/"ep.7"', True),
        ("*", True),
        ('W/"ep.6"', False),
        ('W/"ep.7.19"', False),
    ],
)
def test_if_none_match(header: str | None, matches: bool) -> None:
    assert not_modified(header, 'W/"ep.7"') is matches


def test_cached_answers_304_without_a_body_or_200_with_the_etag() -> None:
    fresh = cached([{"rank": 1}], 'W/"ep.7"', 'W/"ep.6"')
    assert fresh.status_code == 200 and json.loads(bytes(fresh.body)) == [{"rank": 1}]
    same = cached([{"rank": 1}], 'W/"ep.7"', 'W/"ep.7"')
    assert same.status_code == 304 and same.body == b""
    for r in (fresh, same):
        assert r.headers["etag"] == 'W/"ep.7"' and r.headers["cache-control"] == "public, max-age=1"


def handshake(query: str = "", client: tuple[str, int] = ("10.0.0.9", 5000), **headers: str) -> WebSocket:
    scope = {
        "type": "websocket",
        "path": "/ws/leaderboard",
        "query_string": query.encode(),
        "headers": [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
        "client": client,
    }

    async def unused(*_: Any) -> Any:
        raise AssertionError("not used")

    return WebSocket(scope, unused, unused)


async def test_admission_rules_in_order(make_ports: MakePorts) -> None:
    p = make_ports(ws_allowed_origins=["https://game.example"], read_requires_token=True)
    token = mint_token(p.settings, sub="00000000-0000-4000-8000-000000000001", role="player", ttl_s=600)
    evil = handshake(origin="https://evil.example", host="b:1")
    with pytest.raises(OriginRefused):  # before anything else, even a bad board and since
        await admit(evil, p, "nope", "x", None)
    with pytest.raises(Unauthenticated):
        await admit(handshake(host="b:1"), p, "nope", "x", None)
    authed = handshake(f"token={token}", origin="https://game.example", host="b:1")
    with pytest.raises(UnknownBoard, match=r"no board named 'nope'$"):
        await admit(authed, p, "nope", "x", None)
    with pytest.raises(Invalid, match="'since'"):
        await admit(authed, p, "global", "x", None)
    with pytest.raises(Invalid, match="'epoch'"):
        await admit(authed, p, "global", "1", "e" * 65)
    assert await admit(authed, p, "global", "3", "e") == Admission("global", "e", 3, "10.0.0.9")
    p.drain.begin()
    with pytest.raises(Draining) as draining:
        await admit(authed, p, "global", "3", "e")
    assert 1000 <= draining.value.retry_after_ms <= 3000


async def test_the_client_address_behind_a_trusted_proxy(make_ports: MakePorts) -> None:
    p = make_ports(trusted_proxies=["10.0.0.0/8"])
    forwarded = handshake(x_forwarded_for="203.0.113.5, 10.0.0.3")
    assert (await admit(forwarded, p, "global", None, None)).ip == "203.0.113.5"
    direct = handshake(client=("198.51.100.1", 1), x_forwarded_for="203.0.113.5")
    assert (
        await admit(direct, p, "global", None, None)
    ).ip == "198.51.100.1"  # an untrusted peer's XFF is ignored


def test_close_frames() -> None:
    assert close_frame(idle=False, retry_ms=1234) == (1012, '{"retryAfterMs":1234}')
    assert close_frame(idle=True, retry_ms=1234)[0] == 1012  # draining wins
    assert close_frame(idle=True, retry_ms=None) == (1000, "idle timeout")
    assert close_frame(idle=False, retry_ms=None) == (1001, "")


async def next_chunk(events: Any) -> str:
    chunk: str = await asyncio.wait_for(anext(events), 5)
    return chunk


async def test_sse_stream_frames_then_a_final_retry_when_draining(make_ports: MakePorts) -> None:
    p: Ports = make_ports(sse_keepalive_s=0.05)
    p.hub.publish(BoardState("global", "ep", 3, [{"rank": 1, "userId": "u", "username": "U", "score": 9}]))
    stream = SseStream(p, "global", None, None)
    events = stream.events()
    assert await next_chunk(events) == "retry: 2000\n\n"
    snapshot = await next_chunk(events)
    assert snapshot.startswith("event: snapshot\nid: 3\ndata: {") and snapshot.endswith("\n\n")
    assert await next_chunk(events) == ": keep-alive\n\n"  # nothing changes
    assert p.live_clients() == 1
    p.drain.begin()
    final = await next_chunk(events)
    assert final.startswith("retry: ") and 1000 <= int(final.removeprefix("retry: ")) <= 3000
    with pytest.raises(StopAsyncIteration):
        await next_chunk(events)
    assert p.live_clients() == 0  # detached: the drain sees it gone


async def test_readiness(make_ports: MakePorts) -> None:
    p = make_ports()
    checks = await readiness(p)  # Redis refuses (a closed port); the feed has not started
    assert checks["redis"].startswith("error:") and checks["changes"] == "starting"
    assert "shutdown" not in checks
    p.drain.begin()
    assert (await readiness(p))["shutdown"] == "draining"


async def test_the_demo_page(make_ports: MakePorts) -> None:
    p = make_ports(ingest_public_url="https://ingest.example", dev_mode=True)
    r = page.render(p.settings)
    html = bytes(r.body).decode()
    assert '"https://ingest.example"' in html and "__INGEST_URL__" not in html and "__DEV_MODE__" not in html
    assert "const DEV = true;" in html
    assert "connect-src 'self' ws: wss: https://ingest.example;" in r.headers["content-security-policy"]
    assert "ev.code !== 1012" in html and "retryAfterMs" in html  # follows the drain's hint


def live_app(p: Ports) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    install(app)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(live.router)
    app.state.ports = p
    return app


class Socket:
    """A WebSocket client speaking ASGI to the app directly, in the test's own loop."""

    def __init__(self, app: FastAPI, target: str, **headers: str) -> None:
        path, _, query = target.partition("?")
        scope = {
            "type": "websocket",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("10.0.0.9", 5000),
            "server": ("b.test", 80),
            "scheme": "ws",
            "root_path": "",
            "subprotocols": [],
            "extensions": {"websocket.http.response": {}},
        }
        self.to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.to_app.put_nowait({"type": "websocket.connect"})
        self.task = asyncio.create_task(app(scope, self.to_app.get, self._put))

    async def _put(self, message: MutableMapping[str, Any]) -> None:
        await self.from_app.put(dict(message))

    async def next(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.from_app.get(), 5)

    async def refusal(self) -> tuple[int, dict[str, str], dict[str, Any]]:
        start = await self.next()
        assert start["type"] == "websocket.http.response.start", start
        body = await self.next()
        await asyncio.wait_for(self.task, 5)
        headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return start["status"], headers, json.loads(body["body"])


async def test_live_refusals_are_http_answers_in_the_error_shape(make_ports: MakePorts) -> None:
    p = make_ports(ws_max_per_ip=1, ws_allowed_origins=[])
    app = live_app(p)
    status, headers, body = await Socket(app, "/ws/leaderboard", origin="https://evil.example").refusal()
    assert (status, body["code"]) == (403, "forbidden") and headers["x-request-id"]
    status, _, body = await Socket(app, "/ws/leaderboard?since=%C2%B2").refusal()
    assert (status, body["code"]) == (422, "invalid") and "'since'" in body["error"]
    status, _, body = await Socket(app, "/ws/elsewhere").refusal()
    assert (status, body["code"]) == (404, "not_found")
    p.per_ip.acquire("10.0.0.9")  # the address holds its one slot
    status, headers, body = await Socket(app, "/ws/leaderboard").refusal()
    assert (status, body["code"], headers["retry-after"]) == (429, "rate_limited", "5")
    p.per_ip.release("10.0.0.9")
    assert len(p.per_ip) == 0  # refusals hold no slot


async def test_live_client_gets_its_snapshot_then_1012_with_a_hint_when_draining(
    make_ports: MakePorts,
) -> None:
    p = make_ports(ws_max_per_ip=1)
    p.hub.publish(BoardState("global", "ep", 5, []))
    ws = Socket(live_app(p), "/ws/leaderboard?since=4&epoch=other")
    assert (await ws.next())["type"] == "websocket.accept"
    assert json.loads((await ws.next())["text"])["version"] == 5
    assert p.per_ip.count("10.0.0.9") == 1 and p.live_clients() == 1
    with pytest.raises(TooManyFromAddress):
        p.per_ip.acquire("10.0.0.9")
    p.drain.begin()
    closed = await ws.next()
    assert closed["type"] == "websocket.close" and closed["code"] == 1012
    assert 1000 <= json.loads(closed["reason"])["retryAfterMs"] <= 3000
    await asyncio.wait_for(ws.task, 5)
    assert len(p.per_ip) == 0 and p.live_clients() == 0
    status, headers, body = await Socket(live_app(p), "/ws/leaderboard").refusal()  # no newcomers
    assert (status, body["code"]) == (503, "unavailable") and 1 <= int(headers["retry-after"]) <= 3
