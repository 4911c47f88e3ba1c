"""The live WebSocket, ``/ws/leaderboard``: a snapshot, then updates with strictly increasing
versions; ``?since=V&epoch=E`` resumes. Any other WebSocket path gets a 404 in the error shape.

Admission (origin, token, board, ``since``/``epoch``, drain, per-IP cap) is decided before the
handshake is accepted, so every refusal is an HTTP answer (``errors.deny``), never a dropped socket.
Once open, a connection ends with one of: 1000 ``idle timeout`` (the client sent nothing for
``ws_idle_timeout_s``), 1001 (the client could not keep up, or went), or 1012 with
``{"retryAfterMs": N}`` when the instance drains (see ``leaderboard.broadcaster.drain``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from leaderboard.broadcaster import service
from leaderboard.broadcaster.bootstrap import Ports
from leaderboard.broadcaster.entrypoints.deps import get_ports, token_principal, ws_resume, ws_token
from leaderboard.broadcaster.entrypoints.errors import deny
from leaderboard.broadcaster.errors import DomainError, Draining, NoSuchSocket, UnknownBoard
from leaderboard.broadcaster.hub import BoardState, Client
from leaderboard.common.boardkeys import DEFAULT_BOARD

router = APIRouter()
SERVICE_RESTART = 1012  # RFC 6455 registry: "the server is restarting; reconnect"
CLOSE_WAIT_S = 2.0  # a stuck peer cannot take the close handshake hostage


@dataclass(frozen=True)
class Admission:
    board: str
    epoch: str | None
    since: int | None
    ip: str


async def admit(
    websocket: WebSocket, p: Ports, board: str, since: str | None, epoch: str | None
) -> Admission:
    """Every rule a handshake must pass, in order; raises the first refusal."""
    headers = websocket.headers
    p.origins.check(headers.get("origin"), headers.get("host"))
    if p.settings.read_requires_token:
        await token_principal(p.verifier, ws_token(websocket))
    if board not in p.settings.boards:
        raise UnknownBoard(board, may_appear=False)
    resume = ws_resume(since, epoch)
    if p.drain.draining:
        raise Draining(p.drain.hint_ms())
    peer = websocket.client.host if websocket.client else None
    return Admission(board, epoch, resume, p.client_ip(peer, headers.get("x-forwarded-for")))


@router.websocket("/ws/leaderboard")
async def live(
    websocket: WebSocket, board: str = DEFAULT_BOARD, since: str | None = None, epoch: str | None = None
) -> None:
    """Snapshot, then updates with strictly increasing versions. ``since``/``epoch`` resume."""
    p = get_ports(websocket)
    try:
        admission = await admit(websocket, p, board, since, epoch)
        p.per_ip.acquire(admission.ip)
    except DomainError as exc:
        await deny(websocket, exc)
        return
    try:
        await serve(websocket, p, admission)
    finally:
        p.per_ip.release(admission.ip)


def close_frame(idle: bool, retry_ms: int | None) -> tuple[int, str]:
    """The close code and reason a connection ends with (see the module docstring)."""
    if retry_ms is not None:
        return SERVICE_RESTART, json.dumps({"retryAfterMs": retry_ms}, separators=(",", ":"))
    if idle:
        return 1000, "idle timeout"
    return 1001, ""


async def serve(websocket: WebSocket, p: Ports, a: Admission) -> None:
    """An admitted client: accept, subscribe to the hub, and read until one side ends it.

    One task per connection, the one the server runs this endpoint in: frames are written by the
    hub's fan-out (no writer task) and this task is the reader. The drain, or the hub dropping a
    client that cannot keep up, ends the read by cancelling this task with a reason."""
    await websocket.accept()
    await service.catch_up(p, a.board, a.epoch, a.since)
    me = asyncio.current_task()
    assert me is not None
    ending: list[int | None] = []  # why the read was interrupted: a drain's retry delay, or None
    reading = True

    def end(retry_ms: int | None) -> None:
        if reading and not ending:
            ending.append(retry_ms)
            me.cancel()

    async def send(text: str, state: BoardState, kind: str) -> None:
        await websocket.send_text(text)

    client = Client(p.hub, a.board, send, "ws", on_close=lambda: end(None))
    idle = False
    unsubscribe = p.drain.subscribe(end)
    try:
        p.hub.attach(client, a.epoch, a.since)
        idle = await _listen(websocket, p.settings.ws_idle_timeout_s)
    except asyncio.CancelledError:
        if not ending:
            raise  # the server's own cancellation
        me.uncancel()
    finally:
        reading = False
        unsubscribe()
        p.hub.detach(client)
    code, reason = close_frame(idle, ending[0] if ending else None)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_WAIT_S):
            await websocket.close(code=code, reason=reason)


async def _listen(websocket: WebSocket, idle_timeout: float) -> bool:
    """Read what the client sends, so that a close or a dead peer is noticed, and answer the page's
    heartbeat (``{"type": "ping"}`` -> ``{"type": "pong"}``: browsers cannot see protocol pongs, so
    this is how the page tells a live socket from a half-open one). True when idle too long.
    ``asyncio.timeout``, not ``wait_for``: no extra task per message."""
    while True:
        try:
            async with asyncio.timeout(idle_timeout if idle_timeout > 0 else None):
                message = await websocket.receive()
        except TimeoutError:
            return True
        except (WebSocketDisconnect, RuntimeError):
            return False
        if message["type"] == "websocket.disconnect":
            return False
        if message.get("text") and '"ping"' in message["text"]:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await websocket.send_text('{"type":"pong"}')


@router.websocket("/{path:path}")
async def no_such_socket(websocket: WebSocket, path: str) -> None:
    """Any other WebSocket path: a 404 in the error shape rather than the server's bare 403."""
    await deny(websocket, NoSuchSocket())
