"""The live WebSocket as the broadcaster serves it (issue 12): ``create_app``'s app hands WebSocket
handshakes to the raw endpoint ahead of the middleware and FastAPI, and uvicorn runs them with
``LiveSocketProtocol``. A real uvicorn server on a free port with ``main.run``'s WebSocket options and
the real ports built without I/O (the unit fixtures'); real python-websockets clients.

What the raw path must keep: refusals as HTTP answers in the error shape with X-Request-ID (origin,
per-IP cap, bad ``since``, unknown board, other paths), resume with ``since``/``epoch``, the
heartbeat's pong, coalescing, the 1012 close with a hint on drain, and per-IP slots released; and
the fan-out's direct write: websockets' own frame bytes, every frame in order, declined whenever
uvicorn's ``send`` would not write at once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
import websockets
from prometheus_client import REGISTRY
from websockets.asyncio.client import ClientConnection
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Origin

from leaderboard.broadcaster.bootstrap import Ports
from leaderboard.broadcaster.entrypoints.app import BroadcasterApp, create_app
from leaderboard.broadcaster.entrypoints.ws import Flag, Inbox, LiveSocketProtocol, wire_frame
from leaderboard.broadcaster.hub import BoardState
from leaderboard.testkit.processes import free_port

MakePorts = Callable[..., Ports]


def top(version: int) -> list[dict[str, Any]]:
    return [{"rank": 1, "userId": f"u{version % 3}", "username": "p", "score": version}]


def state(version: int, epoch: str = "ep") -> BoardState:
    return BoardState("global", epoch, version, top(version))


@dataclass
class Live:
    url: str
    ports: Ports
    server: uvicorn.Server

    def ws(self, query: str = "") -> str:
        return self.url.replace("http://", "ws://") + "/ws/leaderboard" + (f"?{query}" if query else "")

    def protocols(self) -> list[Any]:
        return [c for c in self.server.server_state.connections if isinstance(c, LiveSocketProtocol)]


@contextlib.asynccontextmanager
async def serving(p: Ports, per_message_deflate: bool = False) -> AsyncIterator[Live]:
    """The app of ``create_app`` under uvicorn as ``main.run`` starts it, in this test's loop (no
    lifespan: the ports are the fixture's; ``per_message_deflate`` only where a test needs it on)."""
    app = create_app(p.settings)
    assert isinstance(app, BroadcasterApp)
    app.state.ports = p
    port = free_port()
    config = uvicorn.Config(
        app,
        **p.settings.uvicorn_options(port),
        lifespan="off",
        ws=LiveSocketProtocol,
        ws_per_message_deflate=per_message_deflate,
        ws_max_size=4096,
        ws_ping_interval=p.settings.ws_ping_interval_s,
        ws_ping_timeout=p.settings.ws_ping_timeout_s,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.01)
        yield Live(f"http://127.0.0.1:{port}", p, server)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def recv(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def refused(url: str, **kwargs: Any) -> tuple[int, dict[str, str], dict[str, Any]]:
    with pytest.raises(websockets.InvalidStatus) as refusal:
        async with websockets.connect(url, open_timeout=5, **kwargs):
            pass
    r = refusal.value.response
    return r.status_code, {k.lower(): v for k, v in r.headers.raw_items()}, json.loads(r.body or b"{}")


async def test_refusals_are_http_answers_in_the_error_shape_with_a_request_id(make_ports: MakePorts) -> None:
    p = make_ports(ws_allowed_origins=["https://game.example"], ws_max_per_ip=2)
    async with serving(p) as live:
        status, headers, body = await refused(live.ws(), origin=Origin("https://evil.example"))
        assert (status, body["status"], body["code"]) == (403, "error", "forbidden") and body["error"]
        assert headers["x-request-id"] and headers["content-type"] == "application/json"

        # The caller's request id is echoed when it is sane, replaced when it is not.
        kept = {"X-Request-ID": "trace-1"}
        status, headers, body = await refused(live.ws("board=nope"), additional_headers=kept)
        assert (status, body["code"], headers["x-request-id"]) == (404, "not_found", "trace-1")
        status, headers, _ = await refused(live.ws("board=nope"), additional_headers={"X-Request-ID": "a b"})
        assert status == 404 and headers["x-request-id"] not in ("", "a b")

        status, _, body = await refused(live.ws("since=%C2%B2"))  # a Unicode digit is not a number
        assert (status, body["code"]) == (422, "invalid") and "'since'" in body["error"]
        status, _, body = await refused(live.ws("epoch=" + "e" * 65))
        assert (status, body["code"]) == (422, "invalid") and "'epoch'" in body["error"]
        status, headers, body = await refused(live.url.replace("http://", "ws://") + "/ws/elsewhere")
        assert (status, body["code"]) == (404, "not_found") and headers["x-request-id"]

        # The per-IP cap: two held, the third refused with Retry-After; slots free on close.
        held = [await websockets.connect(live.ws(), ping_interval=None) for _ in range(2)]
        status, headers, body = await refused(live.ws())
        assert (status, body["code"], headers["retry-after"]) == (429, "rate_limited", "5")
        for ws in held:
            await ws.close()
        for _ in range(100):
            if len(p.per_ip) == 0 and p.live_clients() == 0:
                break
            await asyncio.sleep(0.05)
        assert len(p.per_ip) == 0 and p.live_clients() == 0
    assert len(p.per_ip) == 0  # refusals never held a slot


async def test_snapshot_updates_resume_and_heartbeat(make_ports: MakePorts) -> None:
    p = make_ports(history_size=8)
    for v in range(1, 6):
        p.hub.publish(state(v))
    async with serving(p) as live:
        async with websockets.connect(live.ws(), ping_interval=None) as ws:
            first = await recv(ws)
            assert (first["type"], first["epoch"], first["version"], first["top"]) == (
                "snapshot",
                "ep",
                5,
                top(5),
            )
            p.hub.publish(state(6))
            update = await recv(ws)
            assert (update["type"], update["version"], update["top"]) == ("update", 6, top(6))
            await ws.send('{"type":"ping"}')
            assert await recv(ws) == {"type": "pong"}
            # Only the handshake reads uvicorn's request and response: gone once it is answered.
            (protocol,) = live.protocols()
            assert not hasattr(protocol, "request") and not hasattr(protocol, "response")

        async with websockets.connect(live.ws("since=4&epoch=ep"), ping_interval=None) as ws:
            resumed = await recv(ws)
            assert (resumed["type"], resumed["version"], resumed["top"]) == ("update", 6, top(6))
            assert set(resumed["changed"]) <= {"u0", "u1", "u2"}
        async with websockets.connect(live.ws("since=4&epoch=other"), ping_interval=None) as ws:
            assert ((f := await recv(ws))["type"], f["version"]) == ("snapshot", 6)
        async with websockets.connect(live.ws("since=6&epoch=ep"), ping_interval=None) as ws:
            with pytest.raises(TimeoutError):  # current already: nothing until the next change
                await asyncio.wait_for(ws.recv(), 0.5)
            p.hub.publish(state(7))
            assert ((f := await recv(ws))["type"], f["version"]) == ("update", 7)
            p.hub.publish(state(1, epoch="rebuilt"))  # a new epoch: a snapshot, even at a lower version
            assert ((f := await recv(ws))["type"], f["epoch"], f["version"]) == ("snapshot", "rebuilt", 1)


def coalesced_or_dropped() -> float:
    return sum(
        REGISTRY.get_sample_value(name) or 0.0
        for name in ("broadcaster_coalesced_total", "broadcaster_dropped_total")
    )


async def test_a_client_that_does_not_read_is_coalesced_and_the_others_get_every_version(
    make_ports: MakePorts,
) -> None:
    p = make_ports()
    big = [{"rank": i, "userId": f"u{i}", "username": "x" * 200, "score": i} for i in range(1, 101)]
    p.hub.publish(BoardState("global", "ep", 1, big))
    async with serving(p) as live:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        sock.connect(("127.0.0.1", int(live.url.rsplit(":", 1)[1])))
        stalled = await websockets.connect(live.ws(), sock=sock, ping_interval=None, max_queue=1)
        reader = await websockets.connect(live.ws(), ping_interval=None)
        try:
            await recv(stalled)
            await recv(reader)
            before, v = coalesced_or_dropped(), 1
            while coalesced_or_dropped() == before:  # until the stalled client's socket is full
                v += 1
                assert v < 5_000, "the stalled client was never coalesced"
                p.hub.publish(BoardState("global", "ep", v, [{**big[0], "score": v}, *big[1:]]))
                assert (await recv(reader))["version"] == v  # every version, however stuck the other
            for _ in range(20):
                v += 1
                p.hub.publish(BoardState("global", "ep", v, [{**big[0], "score": v}, *big[1:]]))
                assert (await recv(reader))["version"] == v
            versions = [1]
            with contextlib.suppress(websockets.ConnectionClosed):
                while versions[-1] < v:
                    versions.append((await recv(stalled, 10))["version"])
            assert versions == sorted(set(versions)) and len(versions) < v  # coalesced, in order
        finally:
            await stalled.close()
            await reader.close()


async def test_draining_closes_with_1012_and_a_hint_then_refuses_newcomers(make_ports: MakePorts) -> None:
    p = make_ports()
    p.hub.publish(state(1))
    async with serving(p) as live:
        async with websockets.connect(live.ws(), ping_interval=None) as ws:
            await recv(ws)
            p.drain.begin()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            assert 1000 <= json.loads(closed.value.rcvd.reason)["retryAfterMs"] <= 3000
        status, headers, body = await refused(live.ws())
        assert (status, body["code"]) == (503, "unavailable") and 1 <= int(headers["retry-after"]) <= 3
        for _ in range(100):
            if p.live_clients() == 0 and len(p.per_ip) == 0:
                break
            await asyncio.sleep(0.05)
        assert p.live_clients() == 0 and len(p.per_ip) == 0


async def test_idle_clients_are_closed_and_the_heartbeat_keeps_one_open(make_ports: MakePorts) -> None:
    p = make_ports(ws_idle_timeout_s=0.5)
    p.hub.publish(state(1))
    async with serving(p) as live:
        async with websockets.connect(live.ws(), ping_interval=None) as idle:
            await recv(idle)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await recv(idle, 5)
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1000, "idle timeout")
        async with websockets.connect(live.ws(), ping_interval=None) as alive:
            await recv(alive)
            for _ in range(5):  # 1 s: twice the idle timeout
                await alive.send('{"type":"ping"}')
                assert await recv(alive) == {"type": "pong"}
                await asyncio.sleep(0.2)


async def test_inbox_keeps_order_and_loses_nothing_to_a_cancelled_get() -> None:
    inbox = Inbox()
    assert inbox.empty()
    getter = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert not inbox.empty() and inbox.qsize() == 2
    assert [await inbox.get(), await inbox.get()] == [1, 2] and inbox.empty()
    waiting = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    inbox.put_nowait(3)
    assert await asyncio.wait_for(waiting, 1) == 3


async def test_flag_wakes_every_waiter_and_a_cancelled_waiter_leaves() -> None:
    flag = Flag()
    assert not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(3)]
    gone = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert not any(w.done() for w in waiters)
    flag.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 1) == [True, True, True]
    assert await flag.wait() is True  # set: at once
    flag.clear()
    assert not flag.is_set()


# --- the fan-out's direct write (LiveSocketProtocol.write_text_now) ---------------------------------


def reference_frame(text: str) -> bytes:
    """What python-websockets' own server protocol writes for ``send_text`` on an open connection
    with no extensions: the bytes the direct write must reproduce."""
    reference = ServerProtocol()
    reference.state = State.OPEN
    reference.send_text(text.encode())
    return b"".join(reference.data_to_send())


def test_the_serialised_frame_is_websockets_own_for_every_length() -> None:
    # The three length encodings (7-bit, 16-bit, 64-bit) and non-ASCII text (bytes, not characters).
    for text in ("", "x", "é" * 63, "é" * 64, "y" * 125, "y" * 126, "z" * 65_535, "z" * 65_536, '{"a":"✓"}'):
        assert wire_frame(text) == reference_frame(text)
    assert wire_frame("x") is wire_frame("x")  # serialised once


async def test_fan_out_writes_websockets_frames_directly_in_order_with_resume(make_ports: MakePorts) -> None:
    """Real clients get, frame for frame, the texts the hub serialised (snapshot, updates, the update a
    resumed client starts from, a new epoch's snapshot), in order, and the direct write carried them."""
    p = make_ports(history_size=8)
    for v in range(1, 4):
        p.hub.publish(state(v))
    direct = 0
    real = LiveSocketProtocol.write_text_now

    def counting(self: LiveSocketProtocol, text: str) -> bool:
        nonlocal direct
        wrote = real(self, text)
        direct += wrote
        return wrote

    async with serving(p) as live:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(LiveSocketProtocol, "write_text_now", counting)
            fresh = [await websockets.connect(live.ws(), ping_interval=None) for _ in range(20)]
            resumed = await websockets.connect(live.ws("since=2&epoch=ep"), ping_interval=None)
            try:
                expected_fresh = [state(3).snapshot]
                expected_resumed = [p.hub.update_frame(p.hub.history["global"][2], p.hub.states["global"])]
                for _ in range(100):  # the connections' first frames, written on attach
                    if p.live_clients() == 21:
                        break
                    await asyncio.sleep(0.02)
                for v in range(4, 9):
                    before = p.hub.states["global"]
                    p.hub.publish(state(v))
                    frame = p.hub.update_frame(before, p.hub.states["global"])
                    expected_fresh.append(frame)
                    expected_resumed.append(frame)
                p.hub.publish(state(1, epoch="rebuilt"))
                expected_fresh.append(p.hub.states["global"].snapshot)
                expected_resumed.append(p.hub.states["global"].snapshot)
                for ws in fresh:
                    got = [await asyncio.wait_for(ws.recv(), 5) for _ in expected_fresh]
                    assert got == expected_fresh  # text frames (str), exactly these, in this order
                got = [await asyncio.wait_for(resumed.recv(), 5) for _ in expected_resumed]
                assert got == expected_resumed
                assert json.loads(got[0])["type"] == "update" and json.loads(got[-1])["type"] == "snapshot"
                for ws in [*fresh, resumed]:
                    with pytest.raises(TimeoutError):  # nothing more, nothing twice
                        await asyncio.wait_for(ws.recv(), 0.2)
            finally:
                for ws in [*fresh, resumed]:
                    await ws.close()
    assert direct == 21 * 7  # every frame after the handshake went the direct way


async def test_clients_gone_mid_fan_out_do_not_break_the_others(make_ports: MakePorts) -> None:
    p = make_ports()
    p.hub.publish(state(1))
    async with serving(p) as live:
        clients = [await websockets.connect(live.ws(), ping_interval=None) for _ in range(12)]
        for ws in clients:
            assert (await recv(ws))["version"] == 1
        gone, kept = clients[::2], clients[1::2]
        for ws in gone[:3]:
            ws.transport.abort()  # reset, no close handshake
        for ws in gone[3:]:
            await ws.close()
        for v in range(2, 6):  # published before and while the server notices
            p.hub.publish(state(v))
            await asyncio.sleep(0)
        for ws in kept:
            assert [(await recv(ws))["version"] for _ in range(4)] == [2, 3, 4, 5]
        for _ in range(100):
            if p.live_clients() == len(kept):
                break
            await asyncio.sleep(0.05)
        assert p.live_clients() == len(kept)
        p.hub.publish(state(6))
        for ws in kept:
            assert (await recv(ws))["version"] == 6
            await ws.close()


async def test_the_direct_write_declines_whenever_send_would_not_write_at_once(make_ports: MakePorts) -> None:
    """Flow control, a close sent and a negotiated extension each send the frame through uvicorn's
    ``send`` (which waits, refuses or compresses) rather than the direct write."""
    p = make_ports()
    p.hub.publish(state(1))
    async with serving(p) as live, websockets.connect(live.ws(), ping_interval=None) as ws:
        await recv(ws)
        (protocol,) = live.protocols()
        assert protocol.write_text_now("a") is True
        assert await ws.recv() == "a"
        protocol.pause_writing()
        assert protocol.write_text_now("b") is False
        protocol.resume_writing()
        protocol.conn.send_ping(b"queued")  # something else is waiting to be written first
        assert protocol.write_text_now("c") is False
        protocol.transport.write(b"".join(protocol.conn.data_to_send()))
        assert protocol.write_text_now("d") is True
        assert await ws.recv() == "d"
        protocol.close_sent = True
        assert protocol.write_text_now("e") is False
        protocol.close_sent = False
    async with (
        serving(p, per_message_deflate=True) as live,
        websockets.connect(live.ws(), ping_interval=None, compression="deflate") as ws,
    ):
        assert (await recv(ws))["version"] == 1
        (protocol,) = live.protocols()
        assert protocol.conn.extensions  # negotiated
        assert protocol.write_text_now("f") is False
        p.hub.publish(state(2))  # through send: compressed, and still the right frame
        assert (await recv(ws))["version"] == 2
