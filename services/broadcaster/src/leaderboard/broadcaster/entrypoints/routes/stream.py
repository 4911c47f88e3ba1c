"""Server-Sent Events: the live frames for clients that cannot use a WebSocket.

``event: snapshot`` then ``event: update``; ``id`` is the version, so an EventSource resumes with
``Last-Event-ID``. When the instance drains (SIGTERM), the stream ends with its own jittered
``retry: N``: the EventSource reconnects after N ms (to another instance) with its Last-Event-ID.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from leaderboard.broadcaster import service
from leaderboard.broadcaster.bootstrap import Ports
from leaderboard.broadcaster.entrypoints.deps import Board, Epoch, Gate, PortsDep, Resume
from leaderboard.broadcaster.errors import Draining, UnknownBoard
from leaderboard.broadcaster.hub import BoardState, Client
from leaderboard.broadcaster.policy import check_capacity
from leaderboard.common.boardkeys import DEFAULT_BOARD

router = APIRouter(tags=["live"])
RETRY_MS = 2000  # the EventSource's reconnect delay after a dropped connection


class SseStream:
    """One subscriber's stream: a one-slot outbox the hub fills as it fans out, keep-alive comments while
    nothing changes, and a final ``retry:`` when the instance drains."""

    def __init__(self, p: Ports, board: str, epoch: str | None, since: int | None) -> None:
        self.p, self.epoch, self.since = p, epoch, since
        self.outbox: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        self.client = Client(p.hub, board, self._send, "sse")
        self.final: str | None = None

    async def _send(self, text: str, state: BoardState, kind: str) -> None:
        await self.outbox.put(f"event: {kind}\nid: {state.version}\ndata: {text}\n\n")

    def leave(self, retry_ms: int) -> None:
        """The drain's call: end the stream with this client's reconnect delay."""
        self.final = f"retry: {retry_ms}\n\n"
        if self.outbox.empty():
            self.outbox.put_nowait("")  # wakes the stream; a frame already waiting does too

    async def events(self) -> AsyncIterator[str]:
        hub, keepalive = self.p.hub, self.p.settings.sse_keepalive_s
        hub.attach(self.client, self.epoch, self.since)
        unsubscribe = self.p.drain.subscribe(self.leave)
        try:
            yield f"retry: {RETRY_MS}\n\n"
            while not self.client.closed and self.final is None:
                try:
                    chunk = await asyncio.wait_for(self.outbox.get(), keepalive)
                except TimeoutError:
                    chunk = ": keep-alive\n\n"
                if chunk:
                    yield chunk
            if self.final is not None:
                yield self.final
        finally:
            unsubscribe()
            hub.detach(self.client)


@router.get("/api/v1/leaderboard/stream", responses={200: {"content": {"text/event-stream": {}}}})
async def stream(
    p: PortsDep, _: Gate, resume: Resume, board: Board = DEFAULT_BOARD, epoch: Epoch = None
) -> StreamingResponse:
    """Server-Sent Events: `snapshot` then `update`; `id` is the version (Last-Event-ID resumes)."""
    if board not in p.settings.boards:
        raise UnknownBoard(board)
    check_capacity(p.live_clients(), p.settings.max_sse_clients)
    if p.drain.draining:
        raise Draining(p.drain.hint_ms())
    if resume.from_header:
        # EventSource resends only the id, so assume the epoch we follow. Had the board been rebuilt
        # meanwhile, the frames still carry the whole top: the client lands on the current state.
        cur = p.hub.current(board)
        epoch = epoch or (cur.epoch if cur else None)
    await service.catch_up(p, board, epoch, resume.since)
    return StreamingResponse(
        SseStream(p, board, epoch, resume.since).events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
