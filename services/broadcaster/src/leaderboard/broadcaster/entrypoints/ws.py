"""The broadcaster's WebSocket server protocol: uvicorn's sans-I/O protocol (``websockets-sansio``)
minus what an open connection keeps but never uses again (issue 12). Pass it as uvicorn's ``ws``.

A live connection lasts minutes and does little: it is written to on each board change and
otherwise waits. The memory profile of 2,000 of them (tracemalloc, after the live endpoint left
FastAPI, see ``routes/live.py``) had uvicorn's protocol object at about 16 of the 21 KB each,
and in it:

- the handshake's parsed request and prepared response (``request``, ``response``: two header
  maps), kept for the connection's life although only the handshake reads them: released once the
  handshake is answered;
- an ``asyncio.Queue`` for what the client sends (three deques, an ``Event`` with a fourth, each
  deque a 64-slot block): :class:`Inbox`, a list and a future, for the one reader ASGI allows;
- an ``asyncio.Event`` for write flow control (another deque): :class:`Flag`.

Nothing else changes: the handshake, frames, keep-alive pings, closes and refusals are uvicorn's
own code; the protocol only sees these objects through ``put_nowait``/``get``/``empty`` and
``set``/``clear``/``wait``, which the replacements keep. Measured (RSS, 5,000 connections):
about 22 KB per connection with uvicorn's protocol, 15.6 KB with this one.

One addition for the fan-out, :meth:`LiveSocketProtocol.write_text_now`: the hub writes one text
to thousands of sockets, and through uvicorn's ``send`` each write built a message dict, two
coroutines, a ``Frame`` and its serialisation (the text encoded and framed again per connection),
a list and a join. A server's frame is unmasked and, with permessage-deflate off (``main.py``),
has no extension to apply, so its bytes are the same on every connection: :func:`wire_frame`
serialises a text once (websockets' own ``Frame.serialize``) and ``write_text_now`` hands those
bytes to the transport when ``send`` would have written them at once, and declines (the caller
goes through ``send``) in every other case.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State

WIRE_CACHE = 64  # serialised texts kept; a fan-out needs one or two (an update, a snapshot)
_wire: dict[str, bytes] = {}


def wire_frame(text: str) -> bytes:
    """``text`` as the bytes of one server text frame with no extensions: what websockets'
    ``send_text`` appends for such a connection, serialised once however many sockets take it."""
    frame = _wire.get(text)
    if frame is None:
        if len(_wire) >= WIRE_CACHE:
            _wire.clear()
        frame = _wire[text] = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
    return frame


class Inbox:
    """What ``asyncio.Queue`` does for uvicorn's protocol (unbounded, one reader), in a list and at
    most one future. A cancelled ``get`` loses nothing: the item stays until a ``get`` returns it."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> Any:
        while not self._items:
            if self._waiter is not None and not self._waiter.done():
                raise RuntimeError("Inbox.get: one reader at a time")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class Flag:
    """What ``asyncio.Event`` does for uvicorn's write flow control, without a deque of waiters
    until someone waits (only while the peer's buffer is full)."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


class LiveSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol with the savings in the module docstring."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        self.__dict__.pop("request", None)  # parsed into the scope; not read again

    def write_text_now(self, text: str) -> bool:
        """Write ``text`` as a frame now, if uvicorn's ``send`` would write it at once (the transport
        takes data, the handshake is done, no close sent or received, no partial message, nothing
        else queued, no extension, no frame logging) and return True; else False, and nothing was
        written: the caller uses ``send``, which waits, refuses or raises as uvicorn does."""
        conn = self.conn
        if (
            self.writable.is_set()
            and not self.disconnected
            and self.handshake_complete
            and not self.close_sent
            and self.initial_response is None
            and conn.state is State.OPEN
            and not conn.expect_continuation_frame
            and not conn.extensions
            and not conn.writes
            and not conn.debug
        ):
            self.transport.write(wire_frame(text))
            return True
        return False

    def send(self, message: Any) -> Coroutine[Any, Any, None]:
        """uvicorn's ``send``; a frame goes to it directly (no wrapper coroutine on the fan-out's
        path), anything else through :meth:`_answer`."""
        if message["type"] == "websocket.send":
            return super().send(message)
        return self._answer(message)

    async def _answer(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete:
            self.__dict__.pop("response", None)  # the handshake is answered; not read again
