"""The HTTP/1.1 connection layer of both HTTP services: uvicorn's httptools protocol with bounds on
what a client may send before the app sees a request, and refusals in the services' error shape.

uvicorn bounds none of this: httptools buffers a header of any size (an 8 MB header was accepted),
takes any number of them (20,000 were), waits for ever for the rest of a request head (slow-header
connections stay open), and answers a malformed request with its own text/plain 400. Behind a proxy
such as nginx these limits would be the proxy's; the services also run exposed (``make run``, a
plain load balancer), so they hold them themselves. No library adds them to uvicorn; h11 has only a
total-size bound (``h11_max_incomplete_event_size``), no count and no deadline, hence this subclass.

What it enforces, per request head (request line and headers):

- at most ``max_bytes`` in all, counted as bytes arrive, before httptools buffers them (431);
- at most ``max_count`` header fields (431);
- a request target of at most ``max_target_bytes`` (414): the WebSocket handshake is re-parsed by
  the websockets library, which resets the connection on a line over 8 KiB, so the bound keeps a
  long ``/ws/...?since=`` an HTTP answer;
- the whole head within ``timeout_s`` of the connection opening or of the previous response (408; an
  idle keep-alive connection is left to uvicorn's keep-alive timer and closed without an answer).

Every refusal is ``{"status": "error", "error", "code"}`` with an X-Request-ID and ``Connection:
close``. The connection is then half-closed and what the client is still sending is read and dropped
(at most ``LINGER_BYTES`` for at most ``LINGER_S``) before it is closed, so that the client reads the
answer instead of a reset.

It also writes a response's head and the first part of its body in one transport write
(:class:`HeadWithBody`): uvicorn writes them in two, each a ``send`` system call, and under load (k6,
issue 12) that write was ingest's largest self time. The head is held until the body's first write,
and at most until the event loop's next turn, so a streamed response's head is not delayed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from leaderboard.common.web import sane_request_id

# Bytes read and dropped after a refusal, and for how long, before the connection is closed.
LINGER_BYTES = 1024 * 1024
LINGER_S = 2.0


@dataclass(frozen=True)
class HeadLimits:
    max_bytes: int = 16 * 1024
    max_count: int = 100
    max_target_bytes: int = 8000
    timeout_s: float = 10.0


class HeadRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def refusal(
    status: int,
    code: str,
    message: str,
    request_id: str,
    default_headers: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    """A complete HTTP/1.1 response in the error shape, announcing that the connection closes."""
    body = json.dumps({"status": "error", "error": message, "code": code}).encode()
    phrase = HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {phrase}".encode()]
    lines += [name + b": " + value for name, value in default_headers or []]
    lines += [
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        b"x-request-id: " + request_id.encode(),
        b"connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class HeadWithBody(asyncio.Transport):
    """The transport one request's response cycle writes through: the cycle's first write, the
    response head, is held and goes out with the next write (the body's first part) as one write on
    ``transport``; a head with no write after it in the same turn of the event loop goes out alone on
    the next turn (a streamed response whose first part is not ready yet). ``100 Continue`` is not a
    head and goes out at once. Closing writes what is held first."""

    __slots__ = ("_fresh", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport, self._loop = transport, loop
        self._fresh = True  # nothing but 100 Continue written yet
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + bytes(data))
        elif self._fresh and data != CONTINUE:
            self._fresh = False
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


def _websocket_line_limits() -> tuple[int, int]:
    """The websockets library's limits on one handshake line and on the number of headers."""
    try:
        from websockets import http11
    except ImportError:  # pragma: no cover - websockets comes with uvicorn[standard]
        return 8192, 128
    return http11.MAX_LINE_LENGTH, http11.MAX_NUM_HEADERS


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`HeadLimits` (see the module docstring)."""

    limits: ClassVar[HeadLimits] = HeadLimits()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._target_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: HeadRefused | None = None
        self._lingering = -1  # bytes dropped since a refusal; -1 until there is one

    # --- connection lifecycle --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.timeout_s, self._head_timeout)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        if self._head_bytes == 0:
            if self.timeout_keep_alive_task is not None:
                return  # idle between requests: uvicorn's keep-alive timer closes it
            self.transport.close()  # connected and never sent a byte
            return
        self._refuse(
            HeadRefused(
                408, "request_timeout", f"request head not received within {self.limits.timeout_s:g}s"
            )
        )

    # --- bytes in --------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._lingering >= 0:
            self._lingering += len(data)
            if self._lingering > LINGER_BYTES:
                # Stop reading rather than close now: a close with unread data resets the connection,
                # and the reset can destroy the answer before the client read it. The linger timer
                # closes the connection.
                self.transport.pause_reading()
            return
        if self._in_head:
            room = self.limits.max_bytes - self._head_bytes
            if len(data) > room:
                # Give the parser only what may still belong to the head; if the head is not
                # complete within it, the head is too large.
                self._head_bytes = self.limits.max_bytes
                self._feed(data[:room])
                if self._lingering >= 0 or self.transport.is_closing() or self.parser is None:
                    return
                if self._in_head:
                    self._refuse(
                        HeadRefused(
                            431,
                            "headers_too_large",
                            f"request line and headers exceed {self.limits.max_bytes} bytes",
                        )
                    )
                    return
                if self.transport.get_protocol() is self:
                    self.data_received(data[room:])
                return
            self._head_bytes += len(data)
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """uvicorn's ``data_received``, with its refusals in the error shape."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            refused = self._refusal or HeadRefused(400, "bad_request", "malformed HTTP request")
            self._refusal = None
            self._refuse(refused)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    # --- parser callbacks ------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        self._target_bytes += len(url)
        if self._target_bytes > self.limits.max_target_bytes:
            self._refusal = HeadRefused(
                414, "uri_too_long", f"request target exceeds {self.limits.max_target_bytes} bytes"
            )
            raise self._refusal
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_count:
            self._refusal = HeadRefused(
                431, "headers_too_large", f"more than {self.limits.max_count} header fields"
            )
            raise self._refusal
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._in_head = False
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not None and cycle.transport is self.transport:  # a new request's cycle
            cycle.transport = HeadWithBody(self.transport, self.loop)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What arrives from now on is the next request's head.
        self._in_head = True
        self._head_bytes = self._header_count = self._target_bytes = 0

    def handle_websocket_upgrade(self) -> None:
        max_line, max_headers = _websocket_line_limits()
        headers = list(self.scope["headers"])
        if len(headers) > max_headers or any(len(n) + len(v) + 2 > max_line for n, v in headers):
            self._refuse(
                HeadRefused(
                    431, "headers_too_large", f"a WebSocket handshake header exceeds {max_line} bytes"
                )
            )
            return
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        self._refuse(HeadRefused(400, "bad_request", "malformed HTTP request"))

    # --- refusing --------------------------------------------------------------------------------

    def _request_id(self) -> str:
        given = next((v for n, v in self.headers or [] if n == b"x-request-id"), b"")
        return sane_request_id(given.decode("latin-1"))

    def _refuse(self, refused: HeadRefused) -> None:
        self._cancel_head_timer()
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is on its way on this connection: another one cannot be written into it.
            self.transport.close()
            return
        self.logger.info("refused a request head: %s", refused.message)
        answer = refusal(
            refused.status,
            refused.code,
            refused.message,
            self._request_id(),
            self.server_state.default_headers,
        )
        self.transport.write(answer)
        # Half-close and drop what the client is still sending for a moment, so that it reads the
        # answer rather than a reset; then close whatever happens.
        self._lingering = 0
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.flow.resume_reading()
            self.loop.call_later(LINGER_S, self._close_lingering)
        else:
            self.transport.close()

    def _close_lingering(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()


def guarded_protocol(limits: HeadLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class to pass as uvicorn's ``http=``, bound to ``limits``."""
    return type("GuardedHttpTools", (GuardedHttpToolsProtocol,), {"limits": limits})
