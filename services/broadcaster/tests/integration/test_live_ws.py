"""Live push over WebSocket with real clients (python-websockets) against a real broadcaster process,
fed through the real changes topic: fan-out to 1,000 clients, a stalled client, resuming with since,
epochs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

if TYPE_CHECKING:  # the fixtures' types; at run time a test module cannot import its conftest
    from services.broadcaster.tests.integration.conftest import Broadcasters, ChangeProducer


CLIENTS = 1_000


def ws_url(http_url: str, **params: str | int) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return http_url.replace("http://", "ws://") + "/ws/leaderboard" + (f"?{query}" if query else "")


async def read_metric(http_url: str, name: str) -> float:
    """Sum of a Prometheus metric's samples in the broadcaster's /metrics."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{http_url}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    )


@pytest.fixture(scope="module")
def url(broadcasters: Broadcasters) -> str:
    return broadcasters.start("broadcaster-live", LEADERBOARD_HISTORY_SIZE="16")


async def recv_json(ws: ClientConnection, timeout: float = 60) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def first_of_epoch(ws: ClientConnection, epoch: str) -> dict[str, Any]:
    """The broadcaster may still hold an earlier test's board: read until our epoch's first frame."""
    while True:
        frame = await recv_json(ws)
        if frame["epoch"] == epoch:
            return frame


def assert_in_order(versions: list[int]) -> None:
    assert versions == sorted(set(versions)), f"versions not strictly increasing: {versions[:50]}"


async def test_thousand_clients_all_reach_the_final_version_in_order(
    url: str, changes: Callable[[], ChangeProducer]
) -> None:
    feed = changes()
    await feed.publish()  # version 1 of this test's epoch
    ready = 0
    all_ready = asyncio.Event()
    gate = asyncio.Semaphore(100)  # do not flood the listen backlog
    final: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def client() -> list[int]:
        nonlocal ready
        async with gate:
            ws = await websockets.connect(ws_url(url), open_timeout=120, ping_interval=None)
        async with ws:
            first = await first_of_epoch(ws, feed.epoch)
            assert first["type"] == "snapshot" and first["board"] == "global"
            assert isinstance(first["top"], list) and first["top"]
            ready += 1
            if ready == CLIENTS:
                all_ready.set()
            versions = [first["version"]]
            target = await final
            while versions[-1] < target:
                frame = await recv_json(ws, 120)
                assert frame["type"] == "update" and frame["epoch"] == feed.epoch
                assert frame["top"] == feed.tops[frame["version"]]  # the state it claims, whole
                versions.append(frame["version"])
            return versions

    tasks = [asyncio.create_task(client()) for _ in range(CLIENTS)]
    try:
        await asyncio.wait_for(all_ready.wait(), 240)  # every client holds a snapshot
        for _ in range(20):  # then a burst of changes, in bursts as the scorer's batches arrive
            last = await feed.publish(10)
            await asyncio.sleep(0.01)
        final.set_result(last)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 240)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert len(results) == CLIENTS
    for versions in results:
        assert_in_order(versions)
        assert versions[-1] == last


async def stalled_client(url: str, rcvbuf: int) -> tuple[ClientConnection, int]:
    """A client with a small receive buffer that will stop reading (websockets stops reading from
    the socket once ``max_queue`` frames wait unread)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    port = int(url.rsplit(":", 1)[1])
    sock.connect(("127.0.0.1", port))
    ws = await websockets.connect(ws_url(url), sock=sock, max_queue=1, ping_interval=None, open_timeout=30)
    return ws, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def kernel_max_send_buffer() -> int:
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        return int(f.read().split()[2])


async def test_a_stalled_client_is_coalesced_or_dropped_and_never_delays_the_others(
    url: str, changes: Callable[[], ChangeProducer]
) -> None:
    feed = changes()
    await feed.publish(size=100, name_len=40)
    stalled, rcvbuf = await stalled_client(url, 32 * 1024)
    snapshot = await first_of_epoch(stalled, feed.epoch)
    others = [await websockets.connect(ws_url(url), ping_interval=None) for _ in range(5)]
    for ws in others:
        await first_of_epoch(ws, feed.epoch)
    before = await read_metric(url, "broadcaster_coalesced_total") + await read_metric(
        url, "broadcaster_dropped_total"
    )

    # More than everything between the server and the stalled reader can hold: its receive buffer,
    # the server's send buffer at its largest, the server's write buffer and the client's queue.
    frame_bytes = len(json.dumps(snapshot, separators=(",", ":")))
    capacity = rcvbuf + kernel_max_send_buffer() + 4 * 65536 + 2 * frame_bytes
    first = feed.version + 1
    try:
        # One change at a time, the next once every other client has this one: they get every version,
        # in order, however stuck the stalled one is. So nothing the counters record comes from them.
        while (feed.version - first + 1) * frame_bytes <= capacity * 3 // 2:
            version = await feed.publish(size=100, name_len=40)
            for ws in others:
                frame = await recv_json(ws, 60)
                assert (frame["type"], frame["version"]) == ("update", version)
                assert frame["top"] == feed.tops[version]
        last = feed.version
        after = await read_metric(url, "broadcaster_coalesced_total") + await read_metric(
            url, "broadcaster_dropped_total"
        )
        assert after > before

        # The stalled client, reading again, sees increasing versions up to the latest state (coalesced)
        # or a closed connection (dropped); never an older state, never the whole backlog.
        versions = [snapshot["version"]]
        with contextlib.suppress(websockets.ConnectionClosed):
            while versions[-1] < last:
                frame = await recv_json(stalled, 120)
                assert frame["top"] == feed.tops[frame["version"]]
                versions.append(frame["version"])
        assert_in_order(versions)
        assert len(versions) < last - first  # it could not have received every version
    finally:
        for ws in [stalled, *others]:
            await ws.close()


async def test_reconnecting_with_since_never_sees_a_gap_or_an_older_state(
    url: str, changes: Callable[[], ChangeProducer]
) -> None:
    feed = changes()
    await feed.publish()
    total = 300
    producing_done = asyncio.Event()

    async def produce() -> None:
        while feed.version < total:
            await feed.publish(random.randint(1, 6))
            await asyncio.sleep(random.uniform(0, 0.03))
        producing_done.set()

    seen: list[tuple[str, int]] = []
    epoch: str | None = None
    version: int | None = None
    reconnects = 0
    producer = asyncio.create_task(produce())
    try:
        while not (producing_done.is_set() and version == feed.version):
            params: dict[str, str | int] = {}
            if version is not None and epoch is not None:
                params = {"since": version, "epoch": epoch}
            async with websockets.connect(ws_url(url, **params), ping_interval=None) as ws:
                reconnects += 1
                for _ in range(random.randint(1, 4)):
                    if epoch is None:
                        frame = await first_of_epoch(ws, feed.epoch)
                    else:
                        try:
                            frame = await recv_json(ws, 2 if producing_done.is_set() else 60)
                        except TimeoutError:
                            break  # already current and nothing new: reconnect and ask again
                    assert frame["epoch"] == feed.epoch
                    if version is not None:
                        assert frame["version"] > version, (frame["type"], frame["version"], version)
                    assert frame["top"] == feed.tops[frame["version"]]  # the whole state: no gap
                    seen.append((frame["type"], frame["version"]))
                    epoch, version = frame["epoch"], frame["version"]
                    if producing_done.is_set() and version == feed.version:
                        break
        await producer
    finally:
        producer.cancel()
    assert version == feed.version >= total and reconnects > 5
    assert_in_order([v for _, v in seen])
    # Resuming from a version still in history yields an update, not a new snapshot.
    assert any(kind == "update" for kind, _ in seen[1:])


async def test_resume_cases_and_epochs(url: str, changes: Callable[[], ChangeProducer]) -> None:
    feed = changes()

    async def caught_up() -> None:
        """Wait until the broadcaster holds the latest published version."""
        async with websockets.connect(ws_url(url), ping_interval=None) as ws:
            frame = await first_of_epoch(ws, feed.epoch)
            while frame["version"] < feed.version:
                frame = await recv_json(ws)

    await feed.publish(5)
    await caught_up()
    epoch = feed.epoch

    async def first(**params: str | int) -> dict[str, Any]:
        async with websockets.connect(ws_url(url, **params), ping_interval=None) as ws:
            return await recv_json(ws, 30)

    await feed.publish(2)  # now at 7
    await caught_up()
    resumed = await first(since=5, epoch=epoch)
    assert (resumed["type"], resumed["version"]) == ("update", 7)
    assert set(resumed["changed"]) <= {e["userId"] for e in feed.tops[5] + feed.tops[7]}
    assert (await first(since=5, epoch="another"))["type"] == "snapshot"
    assert (await first(since=999, epoch=epoch))["type"] == "snapshot"  # ahead of us
    assert (await first(since=5))["type"] == "snapshot"  # no epoch: cannot trust since
    await feed.publish(30)  # history holds 16 versions: 5 is gone
    await caught_up()
    old = await first(since=5, epoch=epoch)
    assert (old["type"], old["version"]) == ("snapshot", 37)

    # A client that is current gets nothing until the next change, then an update.
    async with websockets.connect(ws_url(url, since=37, epoch=epoch), ping_interval=None) as ws:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 1)
        await feed.publish()
        assert ((f := await recv_json(ws))["type"], f["version"]) == ("update", 38)

        # Another epoch (a rebuilt board) arrives as a fresh snapshot, even at a lower version; late
        # messages of the left epoch are ignored.
        old_feed = type(feed)(feed.producer, feed.topic, epoch=epoch, version=feed.version)
        await feed.new_epoch("rebuilt-" + epoch, version=1)
        assert ((f := await recv_json(ws))["type"], f["epoch"], f["version"]) == ("snapshot", feed.epoch, 1)
        await old_feed.publish()
        await feed.publish()
        assert ((f := await recv_json(ws))["type"], f["epoch"], f["version"]) == ("update", feed.epoch, 2)


async def test_bad_subscriptions_are_refused_with_clear_errors(url: str) -> None:
    for params, status in (({"board": "nope"}, 404), ({"since": "abc"}, 422), ({"board": "BAD!"}, 404)):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(ws_url(url, **params)):
                pass
        assert refused.value.response.status_code == status
        body = json.loads(refused.value.response.body or b"{}")
        assert body["status"] == "error" and body["code"] and body["error"]
