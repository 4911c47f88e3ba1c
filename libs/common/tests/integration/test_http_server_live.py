"""The shared HTTP connection layer (leaderboard.common.server) on the broadcaster, the service with
WebSockets: a 10 KB WebSocket query, which the websockets library's 8 KiB line limit used to answer
with a connection reset, gets an HTTP answer in the error shape; so do an oversized or malformed head;
and a normal WebSocket client still gets its handshake."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from leaderboard.testkit.testing import Namespace, System, running_system

UPGRADE = (
    b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


@pytest.fixture(scope="module")
def broadcaster(base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(
        Namespace.create(base_env),
        tmp_path_factory.mktemp("server-logs"),
        only=["scorer", "broadcaster"],
    ) as system:
        yield system


async def exchange(url: str, payload: bytes, within: float = 10.0) -> bytes:
    """Send ``payload`` and read until the server closes (or ``within`` seconds pass)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    received = b""
    try:
        with contextlib.suppress(ConnectionError):
            writer.write(payload)
            await writer.drain()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while chunk := await reader.read(65536):
                    received += chunk
    except ConnectionResetError as exc:
        raise AssertionError(f"connection reset after {received!r}") from exc
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return received


def status_and_error(raw: bytes) -> tuple[int, dict[str, str], dict[str, str]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), raw[:200]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    payload = json.loads(body[: int(headers["content-length"])])
    assert payload["status"] == "error" and payload["error"] and payload["code"], payload
    assert headers["content-type"] == "application/json" and headers["x-request-id"], headers
    return int(lines[0].split()[1]), headers, payload


async def test_a_10_kb_websocket_query_gets_an_http_answer(broadcaster: System) -> None:
    url = broadcaster.broadcaster_url
    request = b"GET /ws/leaderboard?since=" + b"1" * 10_000 + b" HTTP/1.1\r\n" + UPGRADE + b"\r\n"
    status, _, body = status_and_error(await exchange(url, request))
    assert status == 414 and body["code"] == "uri_too_long"
    # A header line longer than the websockets library reads is an HTTP answer too.
    request = b"GET /ws/leaderboard HTTP/1.1\r\n" + UPGRADE + b"X-Pad: " + b"p" * 9_000 + b"\r\n\r\n"
    status, _, body = status_and_error(await exchange(url, request))
    assert status == 431 and body["code"] == "headers_too_large"
    # The control: a correct handshake is still switched to the WebSocket protocol.
    raw = await exchange(url, b"GET /ws/leaderboard HTTP/1.1\r\n" + UPGRADE + b"\r\n", within=2)
    assert raw.startswith(b"HTTP/1.1 101 "), raw[:200]


async def test_the_broadcaster_bounds_heads_and_answers_malformed_ones_in_the_error_shape(
    broadcaster: System,
) -> None:
    url = broadcaster.broadcaster_url
    big = b"GET /api/v1/boards HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 2_000_000 + b"\r\n\r\n"
    status, _, body = status_and_error(await exchange(url, big))
    assert status == 431 and body["code"] == "headers_too_large"
    status, headers, body = status_and_error(await exchange(url, b"NOT HTTP\r\n\r\n"))
    assert status == 400 and body["code"] == "bad_request" and headers["connection"] == "close"
    raw = await exchange(url, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 "), raw[:200]
