"""The guarded protocol writes a response's head and body in one transport write: driven with a
transport that records every write, as uvicorn's event loop would drive it."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from leaderboard.common.server import CONTINUE, HeadLimits, guarded_protocol

REQUEST = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class RecordingTransport(asyncio.Transport):
    """A connected socket's transport as the protocol sees it; every write is kept, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


async def json_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = (await receive())["body"]
    out = b'{"got":' + body + b"}"
    await send(
        {
            "type": "http.response.start",
            "status": 202,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": out})


async def connect(app: Any) -> tuple[Any, RecordingTransport]:
    config = Config(app=app, lifespan="off", log_config=None)
    config.load()
    protocol = guarded_protocol(HeadLimits())(config, ServerState(), {}, asyncio.get_running_loop())
    transport = RecordingTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def settle(transport: RecordingTransport, writes: int, within: float = 2.0) -> None:
    async with asyncio.timeout(within):
        while len(transport.writes) < writes:
            await asyncio.sleep(0.001)
    for _ in range(5):  # a few more turns of the loop: nothing else may be written
        await asyncio.sleep(0)


async def test_a_response_head_and_body_leave_in_one_write_on_every_request_of_a_connection() -> None:
    protocol, transport = await connect(json_app)
    for n in (1, 2, 3):
        protocol.data_received(REQUEST)
        await settle(transport, n)
        assert len(transport.writes) == n
        head, _, body = transport.writes[-1].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 202 Accepted\r\n")
        assert b"content-length: 10" in head.split(b"\r\n")
        assert body == b'{"got":{}}'
    assert not transport.closed
    protocol.connection_lost(None)


async def test_pipelined_requests_get_one_write_each_in_order() -> None:
    protocol, transport = await connect(json_app)
    protocol.data_received(REQUEST + REQUEST.replace(b"{}", b"[]"))
    await settle(transport, 2)
    assert len(transport.writes) == 2
    assert transport.writes[0].endswith(b'{"got":{}}') and transport.writes[1].endswith(b'{"got":[]}')
    assert all(w.startswith(b"HTTP/1.1 202 ") for w in transport.writes)
    protocol.connection_lost(None)


async def test_a_streamed_head_is_not_held_until_its_first_part_is_ready() -> None:
    first_part = asyncio.Event()

    async def streaming(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await first_part.wait()
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    protocol, transport = await connect(streaming)
    protocol.data_received(REQUEST)
    await settle(transport, 1)
    assert transport.writes == [transport.writes[0]] and transport.writes[0].endswith(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in transport.writes[0]
    first_part.set()
    await settle(transport, 3)
    assert transport.writes[1:] == [b"4\r\npart\r\n", b"0\r\n\r\n"]
    protocol.connection_lost(None)


async def test_100_continue_goes_out_at_once_and_the_response_still_in_one_write() -> None:
    protocol, transport = await connect(json_app)
    head, _, body = REQUEST.partition(b"\r\n\r\n")
    protocol.data_received(head + b"\r\nExpect: 100-continue\r\n\r\n")
    await settle(transport, 1)
    assert transport.writes == [CONTINUE]
    protocol.data_received(body)
    await settle(transport, 2)
    assert len(transport.writes) == 2 and transport.writes[1].startswith(b"HTTP/1.1 202 ")
    assert transport.writes[1].endswith(b'{"got":{}}')
    protocol.connection_lost(None)


async def test_a_closing_response_writes_its_head_and_body_before_closing() -> None:
    protocol, transport = await connect(json_app)
    protocol.data_received(REQUEST.replace(b"Host: t\r\n", b"Host: t\r\nConnection: close\r\n"))
    await settle(transport, 1)
    assert transport.closed and len(transport.writes) == 1
    assert transport.writes[0].startswith(b"HTTP/1.1 202 ") and transport.writes[0].endswith(b'{"got":{}}')
    assert b"connection: close" in transport.writes[0]
    protocol.connection_lost(None)


async def test_a_refused_head_is_still_one_complete_answer() -> None:
    protocol, transport = await connect(json_app)
    protocol.data_received(b"NOT HTTP\r\n\r\n")
    await settle(transport, 1)
    assert len(transport.writes) == 1 and transport.writes[0].startswith(b"HTTP/1.1 400 ")
    protocol.connection_lost(None)
