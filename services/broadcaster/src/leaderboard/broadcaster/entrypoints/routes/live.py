"""The live WebSocket, ``/ws/leaderboard``: a snapshot, then updates with strictly increasing
versions; ``?since=V&epoch=E`` resumes. Any other WebSocket path gets a 404 in the error shape.

Admission (origin, token, board, ``since``/``epoch``, drain, per-IP cap) is decided before the
handshake is accepted, so every refusal is an HTTP answer in the error shape with the request id
(``errors.response_for``), never a dropped socket. Once open, a connection ends with one of: 1000
``idle timeout`` (the client sent nothing for ``ws_idle_timeout_s``), 1001 (the client could not keep
up, or went), or 1012 with ``{"retryAfterMs": N}`` when the instance drains (see
``leaderboard.broadcaster.drain``).

A raw ASGI app (:data:`endpoint`), not a FastAPI route (issue 12): the app (``entrypoints/app.py``)
hands it every ``websocket`` scope before the middleware and FastAPI see it. A connection lives for
minutes and holds everything its task awaits in; through FastAPI that was the middleware chain's
frames and closures, Starlette's ``WebSocket``, the dependency solver's exit stacks, and every frame
passed through each layer's ``send`` wrapper (tracemalloc, 2,000 connections: 13 of the 34 KB per
connection). Here a connection is one task (the server's), a :class:`LiveSocket` (the hub's client)
and the server's own state; a frame is one ``send`` of the server's, driven by the hub's fan-out.
What the middleware gave the socket is done here: the request id of a refusal (as
``RequestIdMiddleware`` makes it); CORS does not apply to WebSockets (the origin check does).
:data:`router` mounts the same endpoint in a FastAPI app (tests do).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from starlette.datastructures import QueryParams
from starlette.requests import HTTPConnection
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send

from leaderboard.broadcaster import service
from leaderboard.broadcaster.bootstrap import Ports
from leaderboard.broadcaster.entrypoints.deps import get_ports, token_principal, ws_resume, ws_token
from leaderboard.broadcaster.entrypoints.errors import CLOSE_REASON_MAX, response_for
from leaderboard.broadcaster.entrypoints.ws import LiveSocketProtocol
from leaderboard.broadcaster.errors import DomainError, Draining, NoSuchSocket, UnknownBoard
from leaderboard.broadcaster.hub import BoardState, Client, Hub
from leaderboard.common.boardkeys import DEFAULT_BOARD
from leaderboard.common.web import sane_request_id

LIVE_PATH = "/ws/leaderboard"
SERVICE_RESTART = 1012  # RFC 6455 registry: "the server is restarting; reconnect"
CLOSE_WAIT_S = 2.0  # a stuck peer cannot take the close handshake hostage
PONG_WAIT_S = 5.0
PONG = '{"type":"pong"}'


@dataclass(frozen=True)
class Admission:
    board: str
    epoch: str | None
    since: int | None
    ip: str


async def admit(
    conn: HTTPConnection, p: Ports, board: str, since: str | None, epoch: str | None
) -> Admission:
    """Every rule a handshake must pass, in order; raises the first refusal."""
    headers = conn.headers
    p.origins.check(headers.get("origin"), headers.get("host"))
    if p.settings.read_requires_token:
        await token_principal(p.verifier, ws_token(conn))
    if board not in p.settings.boards:
        raise UnknownBoard(board, may_appear=False)
    resume = ws_resume(since, epoch)
    if p.drain.draining:
        raise Draining(p.drain.hint_ms())
    peer = conn.client.host if conn.client else None
    return Admission(board, epoch, resume, p.client_ip(peer, headers.get("x-forwarded-for")))


def close_frame(idle: bool, retry_ms: int | None) -> tuple[int, str]:
    """The close code and reason a connection ends with (see the module docstring)."""
    if retry_ms is not None:
        return SERVICE_RESTART, json.dumps({"retryAfterMs": retry_ms}, separators=(",", ":"))
    if idle:
        return 1000, "idle timeout"
    return 1001, ""


class LiveEndpoint:
    """The ASGI app of every WebSocket handshake: ``/ws/leaderboard``, or a 404 for any other path.
    The ports come from ``scope["app"]`` (the FastAPI app that holds them). A class, not a function,
    so that a Starlette route mounts it as an ASGI app rather than as a ``WebSocket`` handler."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            raise RuntimeError("the live endpoint serves WebSocket scopes only")
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path != LIVE_PATH:
            await refuse(scope, send, NoSuchSocket())
            return
        p = get_ports(HTTPConnection(scope))
        try:
            admission = await _admit(scope, p)
            p.per_ip.acquire(admission.ip)
        except DomainError as exc:
            await refuse(scope, send, exc)
            return
        try:
            await serve(receive, send, p, admission)
        finally:
            p.per_ip.release(admission.ip)


endpoint = LiveEndpoint()


async def _admit(scope: Scope, p: Ports) -> Admission:
    """:func:`admit` with the query read as FastAPI reads it (the last of repeated names wins).
    The connection object lives only for the checks."""
    query = QueryParams(scope["query_string"])
    conn = HTTPConnection(scope)
    return await admit(conn, p, query.get("board", DEFAULT_BOARD), query.get("since"), query.get("epoch"))


async def refuse(scope: Scope, send: Send, exc: DomainError) -> None:
    """Refuse a handshake with the HTTP answer (ASGI denial response), carrying the request id as
    every HTTP answer does: the caller's X-Request-ID when sane (``RequestIdMiddleware``'s, when the
    endpoint sits behind it), else a new one. Servers without the extension can only close: 1008
    (policy violation) with the sentence."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        response = response_for(exc, _request_id(scope))
        await send(
            {
                "type": "websocket.http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "websocket.http.response.body", "body": response.body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": str(exc)[:CLOSE_REASON_MAX]})


def _request_id(scope: Scope) -> str:
    given: str | None = (scope.get("state") or {}).get("request_id")
    if given:
        return given
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return sane_request_id(value.decode("latin-1"))
    return sane_request_id("")


class LiveSocket(Client):
    """One WebSocket client of the hub. Under the broadcaster's own protocol (``LiveSocketProtocol``,
    as ``main.py`` runs uvicorn) a frame that the socket takes at once is written by the protocol's
    ``write_text_now`` (the frame's bytes serialised once per text, not once per connection); any
    other frame is the server's ``send`` itself (no wrapper coroutine), which :class:`Client` drives
    without a task while the socket takes data. The reader (the connection's task) is cancelled with
    a reason when the hub drops the client or the instance drains."""

    __slots__ = ("_asgi_send", "_protocol", "_reader", "reading", "retry_ms", "stopped")

    def __init__(self, hub: Hub, board: str, send: Send, reader: asyncio.Task[Any]) -> None:
        super().__init__(hub, board, None, "ws")
        self._asgi_send, self._reader = send, reader
        # ASGI's ``send`` is the protocol's bound method; under another server, no fast path.
        protocol = getattr(send, "__self__", None)
        self._protocol = protocol if isinstance(protocol, LiveSocketProtocol) else None
        self.reading = True
        self.stopped = False  # the read was interrupted by :meth:`stop`
        self.retry_ms: int | None = None  # the drain's reconnect hint

    def write_now(self, text: str) -> bool:
        return self._protocol is not None and self._protocol.write_text_now(text)

    def _write(self, text: str, state: BoardState, kind: str) -> Awaitable[None] | None:
        if self.write_now(text):
            return None
        return self._asgi_send({"type": "websocket.send", "text": text})

    def _on_closed(self) -> None:
        self.stop(None)

    def stop(self, retry_ms: int | None) -> None:
        """End the read (once): the drain's call with its hint, or the hub's (None) on close."""
        if self.reading and not self.stopped:
            self.stopped, self.retry_ms = True, retry_ms
            self._reader.cancel()


async def serve(receive: Receive, send: Send, p: Ports, a: Admission) -> None:
    """An admitted client: accept, subscribe to the hub, and read until one side ends it.

    One task per connection, the one the server runs this endpoint in: frames are written by the
    hub's fan-out (no writer task) and this task is the reader. The drain, or the hub dropping a
    client that cannot keep up, ends the read by cancelling this task with a reason."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return  # gone before the handshake completed
    await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
    await service.catch_up(p, a.board, a.epoch, a.since)
    me = asyncio.current_task()
    assert me is not None
    sock = LiveSocket(p.hub, a.board, send, me)
    idle = False
    unsubscribe = p.drain.subscribe(sock.stop)
    try:
        p.hub.attach(sock, a.epoch, a.since)
        idle = await _listen(receive, send, p.settings.ws_idle_timeout_s)
    except asyncio.CancelledError:
        if not sock.stopped:
            raise  # the server's own cancellation
        me.uncancel()
    finally:
        sock.reading = False
        unsubscribe()
        p.hub.detach(sock)
    code, reason = close_frame(idle, sock.retry_ms)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_WAIT_S):
            await send({"type": "websocket.close", "code": code, "reason": reason})


async def _listen(receive: Receive, send: Send, idle_timeout: float) -> bool:
    """Read what the client sends, so that a close or a dead peer is noticed, and answer the page's
    heartbeat (``{"type": "ping"}`` -> ``{"type": "pong"}``: browsers cannot see protocol pongs, so
    this is how the page tells a live socket from a half-open one). True when idle too long.
    One ``asyncio.timeout`` for the connection's life, moved on at each message."""
    loop = asyncio.get_running_loop()
    limit = idle_timeout if idle_timeout > 0 else None
    try:
        async with asyncio.timeout(limit) as deadline:
            while True:
                message = await receive()
                if message["type"] != "websocket.receive":
                    return False  # websocket.disconnect
                if limit is not None:
                    deadline.reschedule(loop.time() + limit)
                text = message.get("text")
                if text and '"ping"' in text:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(PONG_WAIT_S):
                            await send({"type": "websocket.send", "text": PONG})
    except TimeoutError:
        return True


router = APIRouter()
router.routes.append(WebSocketRoute(LIVE_PATH, endpoint))
router.routes.append(WebSocketRoute("/{path:path}", endpoint))  # other paths: the endpoint's 404
