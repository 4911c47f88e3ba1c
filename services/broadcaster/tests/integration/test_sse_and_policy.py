"""Server-Sent Events (id = version, Last-Event-ID) and the WebSocket connection policy (origin
checks, per-IP cap, idle timeout, keep-alive) against real broadcaster processes."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import websockets
from websockets.typing import Origin

if TYPE_CHECKING:  # the fixtures' types; at run time a test module cannot import its conftest
    from services.broadcaster.tests.integration.conftest import Broadcasters, ChangeProducer


def ws_url(http_url: str, **params: str | int) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return http_url.replace("http://", "ws://") + "/ws/leaderboard" + (f"?{query}" if query else "")


@pytest.fixture(scope="module")
def url(broadcasters: Broadcasters) -> str:
    return broadcasters.start("broadcaster-sse", LEADERBOARD_SSE_KEEPALIVE_S="0.5")


class Sse:
    """A minimal EventSource: parses `event`, `id`, `data` fields into dicts."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.comments = 0
        self.retry: int | None = None

    async def next(self, timeout: float = 60) -> dict[str, Any]:
        return await asyncio.wait_for(self._next(), timeout)

    async def _next(self) -> dict[str, Any]:
        fields: dict[str, str] = {}
        async for line in self.lines:
            if not line:
                if "data" in fields:
                    return {
                        "event": fields.get("event"),
                        "id": fields.get("id"),
                        **json.loads(fields["data"]),
                    }
                fields = {}
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            if name == "retry":
                self.retry = int(value.strip())
            fields[name] = value.removeprefix(" ")
        raise EOFError("stream ended")


@asynccontextmanager
async def sse(url: str, headers: dict[str, str] | None = None, **params: str | int) -> AsyncIterator[Sse]:
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=60)) as client,
        client.stream("GET", f"{url}/api/v1/leaderboard/stream", params=params, headers=headers) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        yield Sse(r)


async def of_epoch(stream: Sse, epoch: str) -> dict[str, Any]:
    while (event := await stream.next())["epoch"] != epoch:
        pass
    return event


async def holds_version(url: str, epoch: str, version: int, timeout: float = 30) -> None:
    """Wait until the broadcaster's board (its hot top read) is at ``epoch``/``version``."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(timeout=10) as client:
        while True:
            body = (await client.get(f"{url}/api/v1/leaderboard")).json()
            if (body.get("epoch"), body.get("version")) == (epoch, version):
                return
            assert asyncio.get_running_loop().time() < deadline, f"still at {body.get('version')}"
            await asyncio.sleep(0.02)


async def test_sse_snapshot_updates_and_last_event_id(
    url: str, changes: Callable[[], ChangeProducer]
) -> None:
    feed = changes()
    await feed.publish(3)
    async with sse(url) as stream:
        first = await of_epoch(stream, feed.epoch)
        assert first["event"] == first["type"] == "snapshot" and first["id"] == str(first["version"])
        last = first["version"]
        while last < 3:
            event = await stream.next()
            assert event["event"] == "update" and int(event["id"]) == event["version"] > last
            last = event["version"]
        assert stream.retry is not None
        await feed.publish()
        update = await stream.next()
        assert (update["event"], update["id"], update["top"]) == ("update", "4", feed.tops[4])
        assert update["changed"]

    await feed.publish(2)  # missed while disconnected: 5 and 6
    await holds_version(url, feed.epoch, 6)  # the broadcaster has both before the client comes back
    async with sse(url, headers={"Last-Event-ID": "4"}) as stream:
        resumed = await stream.next()
        assert (resumed["event"], resumed["version"], resumed["top"]) == ("update", 6, feed.tops[6])

    async with sse(url, since=6, epoch="some-other-epoch") as stream:
        assert (await stream.next())["event"] == "snapshot"

    # Keep-alive comments flow while nothing changes.
    async with sse(url, since=6, epoch=feed.epoch) as stream:
        with pytest.raises(TimeoutError):
            await stream.next(timeout=1.5)
        assert stream.comments >= 1


async def test_sse_refuses_a_bad_last_event_id(url: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(f"{url}/api/v1/leaderboard/stream", headers={"Last-Event-ID": "yesterday"})
    assert r.status_code == 422 and r.json()["code"] == "invalid"


@pytest.fixture(scope="module")
def strict_url(broadcasters: Broadcasters) -> str:
    return broadcasters.start(
        "broadcaster-strict",
        LEADERBOARD_WS_ALLOWED_ORIGINS='["https://game.example"]',
        LEADERBOARD_WS_MAX_PER_IP="3",
        LEADERBOARD_WS_IDLE_TIMEOUT_S="1.5",
        LEADERBOARD_WS_PING_INTERVAL_S="0.5",
        LEADERBOARD_WS_PING_TIMEOUT_S="1",
    )


async def refused_status(url: str, **kwargs: Any) -> int:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(url, **kwargs):
            pass
    return refused.value.response.status_code


async def test_origin_checks(strict_url: str) -> None:
    assert await refused_status(ws_url(strict_url), origin=Origin("https://evil.example")) == 403
    async with websockets.connect(ws_url(strict_url), origin=Origin("https://game.example")) as ws:
        await ws.ping()
    host = strict_url.removeprefix("http://")
    async with websockets.connect(ws_url(strict_url), origin=Origin(f"http://{host}")) as ws:  # its own page
        await ws.ping()
    async with websockets.connect(ws_url(strict_url)) as ws:  # not a browser: no Origin header
        await ws.ping()


async def test_per_ip_cap_when_configured(strict_url: str, url: str) -> None:
    held = [await websockets.connect(ws_url(strict_url)) for _ in range(3)]
    try:
        assert await refused_status(ws_url(strict_url)) == 429
        # Off by default: the other instance takes many from the same address.
        many = [await websockets.connect(ws_url(url)) for _ in range(10)]
        for ws in many:
            await ws.close()
    finally:
        for ws in held:
            await ws.close()
    for _ in range(100):  # the slots free once the server has seen the closes
        again: list[Any] = []
        try:
            for _ in range(3):
                again.append(await websockets.connect(ws_url(strict_url)))
            break
        except websockets.InvalidStatus:
            await asyncio.sleep(0.1)
        finally:
            for ws in again:
                await ws.close()
    else:
        raise AssertionError("the per-IP slots were not released")
    for _ in range(200):  # and nothing is left behind on the server
        if await read_metric(strict_url, "broadcaster_clients") == 0:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("closed WebSockets are still counted as connected")


async def test_idle_timeout_and_keepalive(strict_url: str) -> None:
    # A client that sends nothing is closed after the idle timeout...
    async with websockets.connect(ws_url(strict_url), ping_interval=None) as idle:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(idle.recv(), 30)
        assert closed.value.rcvd is not None and closed.value.rcvd.reason == "idle timeout"

    # ...while the page's heartbeat keeps one open and gets application pongs.
    async with websockets.connect(ws_url(strict_url), ping_interval=None) as alive:
        for _ in range(6):  # 3 s: twice the idle timeout
            await alive.send('{"type":"ping"}')
            while json.loads(await asyncio.wait_for(alive.recv(), 10)).get("type") != "pong":
                pass
            await asyncio.sleep(0.5)
        await alive.ping()

    # Protocol pings from the server: a client that never answers them is closed. The raw socket
    # below completes the handshake and then never reads or answers.
    host, port = strict_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        (
            f"GET /ws/leaderboard HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    assert b"101" in await asyncio.wait_for(reader.readline(), 10)
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 30):
            received += chunk
    finally:
        writer.close()
    assert b"\x89" in received  # the server pinged (opcode 0x9) before it gave up and closed


@pytest.fixture(scope="module")
def guarded_url(broadcasters: Broadcasters) -> str:
    return broadcasters.start("broadcaster-guarded", LEADERBOARD_READ_REQUIRES_TOKEN="true")


async def test_reads_can_require_a_token(guarded_url: str, broadcasters: Broadcasters) -> None:
    from leaderboard.common.auth import mint_token

    token = mint_token(broadcasters.ns.settings(), sub=str(uuid.uuid4()), role="player", ttl_s=600)
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=guarded_url, timeout=10) as client:
        for path in ("/api/v1/leaderboard", "/scores", "/api/v1/leaderboard/stream"):
            r = await client.get(path)
            assert r.status_code == 401 and r.json()["code"] == "unauthorized", path
        assert (await client.get("/api/v1/leaderboard", headers=auth)).status_code == 200
        bad = await client.get("/api/v1/leaderboard", headers={"Authorization": f"Bearer {token}x"})
        assert bad.status_code == 401
        assert (await client.get("/healthz")).status_code == 200  # probes stay open
    assert await refused_status(ws_url(guarded_url)) == 401
    assert await refused_status(ws_url(guarded_url, token=token + "x")) == 401
    async with websockets.connect(ws_url(guarded_url, token=token)) as ws:
        await ws.ping()
    async with websockets.connect(ws_url(guarded_url), additional_headers=auth) as ws:
        await ws.ping()


def kernel_max_send_buffer() -> int:
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        return int(f.read().split()[2])


async def read_metric(http_url: str, name: str) -> float:
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{http_url}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    )


async def test_a_stalled_sse_client_is_coalesced_and_never_delays_the_others(
    url: str, changes: Callable[[], ChangeProducer]
) -> None:
    feed = changes()
    await feed.publish(size=100, name_len=40)
    # A raw HTTP client with a small receive buffer that reads the headers and then stops reading.
    port = int(url.rsplit(":", 1)[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 16)
    writer.write(f"GET /api/v1/leaderboard/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    await writer.drain()
    assert b"200" in await asyncio.wait_for(reader.readline(), 30)
    rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    before = await read_metric(url, "broadcaster_coalesced_total") + await read_metric(
        url, "broadcaster_dropped_total"
    )
    try:
        async with sse(url, since=feed.version, epoch=feed.epoch) as other:
            capacity = rcvbuf + kernel_max_send_buffer() + 4 * 65536
            frame_bytes = len(json.dumps({"top": feed.tops[feed.version]}))
            first = feed.version + 1
            # One change at a time, the next once the other client has this one: it gets every
            # version however stuck the stalled one is, so the counters only record the stalled one.
            while (feed.version - first + 1) * frame_bytes <= capacity * 3 // 2:
                version = await feed.publish(size=100, name_len=40)
                event = await other.next(60)
                assert (event["event"], event["version"]) == ("update", version)
                assert event["top"] == feed.tops[version]
        after = await read_metric(url, "broadcaster_coalesced_total") + await read_metric(
            url, "broadcaster_dropped_total"
        )
        assert after > before
    finally:
        writer.close()
