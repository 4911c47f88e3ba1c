"""The drain on SIGTERM, against real broadcaster processes: every WebSocket gets close 1012 with its
own retry hint and every SSE stream a final ``retry:`` well before the server's grace timeout, the
process exits 0, and the clients resuming on another instance with ``since``/``epoch`` get the state
they missed."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

CLIENTS = 20
RETRY_MS = 2000  # the default LEADERBOARD_DRAIN_RETRY_MS: hints lie in 1000..3000


async def recv_json(ws: ClientConnection, timeout: float = 30) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def current(ws: ClientConnection, epoch: str, version: int) -> dict[str, Any]:
    """Read until the frame of (epoch, version): the client holds that state."""
    while True:
        frame = await recv_json(ws)
        if frame["epoch"] == epoch and frame["version"] == version:
            return frame


async def closed_by_server(ws: ClientConnection) -> tuple[float, int, str]:
    """Wait for the server's close frame; (when, code, reason)."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 30)
    assert closed.value.rcvd is not None, "the connection dropped without a close frame"
    return time.monotonic(), closed.value.rcvd.code, closed.value.rcvd.reason


async def sse_until_end(url: str, epoch: str, version: int, opened: asyncio.Event) -> tuple[float, list[str]]:
    """An SSE client that holds (epoch, version), then reads until the server ends the stream."""
    lines: list[str] = []
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=60)) as client,
        client.stream("GET", f"{url}/api/v1/leaderboard/stream") as r,
    ):
        assert r.status_code == 200
        async for line in r.aiter_lines():
            lines.append(line)
            if line.startswith("data:"):
                held = json.loads(line[5:])
                if (held["epoch"], held["version"]) == (epoch, version):
                    opened.set()
    return time.monotonic(), lines


async def test_sigterm_drains_every_client_with_a_retry_hint_and_they_resume_elsewhere(
    broadcasters: Any,
    changes: Callable[[], Any],
    kit: Any,  # the fixtures' types: see conftest.py
) -> None:
    a = broadcasters.start("broadcaster-drain-a")
    b = broadcasters.start("broadcaster-drain-b")
    feed = changes()
    await feed.publish(3)
    clients = [await websockets.connect(kit.ws_url(a), ping_interval=None) for _ in range(CLIENTS)]
    for ws in clients:
        await current(ws, feed.epoch, 3)
    sse_open = asyncio.Event()
    sse = asyncio.create_task(sse_until_end(a, feed.epoch, 3, sse_open))
    await asyncio.wait_for(sse_open.wait(), 30)
    ends = [asyncio.create_task(closed_by_server(ws)) for ws in clients]

    proc = broadcasters.supervisor.running["broadcaster-drain-a"].proc
    sigterm = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    await feed.publish(2)  # versions 4 and 5 happen while the clients are away
    closes = await asyncio.wait_for(asyncio.gather(*ends), 30)
    sse_end, sse_lines = await asyncio.wait_for(sse, 30)
    exit_status = await asyncio.to_thread(proc.wait, 30)
    exited = time.monotonic() - sigterm

    hints = []
    for when, code, reason in closes:
        assert code == 1012, (code, reason)
        hint = json.loads(reason)["retryAfterMs"]
        assert RETRY_MS // 2 <= hint <= RETRY_MS * 3 // 2, hint
        assert when - sigterm < 1.0, f"close came {when - sigterm:.2f}s after SIGTERM"
        hints.append(hint)
    assert len(set(hints)) > CLIENTS // 2, f"hints not jittered per client: {hints}"
    retries = [line for line in sse_lines if line.startswith("retry:")]
    assert len(retries) == 2 and sse_lines[-2:] == [retries[-1], ""], sse_lines[-4:]  # the stream's last word
    assert RETRY_MS // 2 <= int(retries[-1].removeprefix("retry:")) <= RETRY_MS * 3 // 2
    assert sse_end - sigterm < 1.0
    assert exit_status == 0, exit_status
    assert exited < 5, f"exited {exited:.1f}s after SIGTERM"  # drain, then uvicorn's own shutdown

    # Each client resumes on the other instance from what it held: the missed state, as an update.
    resumed = [await websockets.connect(kit.ws_url(b, since=3, epoch=feed.epoch)) for _ in range(3)]
    for ws in resumed:
        async with ws:
            version = 3
            while version < 5:  # 5 at once, or 4 then 5 if this instance was still taking them in
                frame = await recv_json(ws)
                assert (frame["type"], frame["epoch"]) == ("update", feed.epoch), frame["type"]
                assert frame["version"] > version and frame["top"] == feed.tops[frame["version"]]
                version = frame["version"]
    # One that held another epoch's state gets a fresh snapshot of the current one.
    async with websockets.connect(kit.ws_url(b, since=3, epoch="gone")) as ws:
        frame = await current(ws, feed.epoch, 5)
        assert frame["type"] == "snapshot" and frame["top"] == feed.tops[5]
    broadcasters.stop("broadcaster-drain-b")
