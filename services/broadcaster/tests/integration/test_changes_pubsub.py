"""The live path of board changes (issue 12) through a real broadcaster process: the scorer repeats
each ``BoardChanged`` record (the same bytes) on the Redis channel ``{prefix}:changes`` beside the
changes topic; the feed applies whichever copy arrives first and the hub keeps the newer version.

Here the test plays the scorer: it publishes on the channel, on the topic, or on both, and reads
what a WebSocket client gets. Reconciliation with Redis is off, and no board is in Redis, so every
frame comes from one of the two copies."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import websockets
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection

from leaderboard.common.boardkeys import changes_channel
from leaderboard.common.events import BoardChanged
from leaderboard.testkit.testing import Namespace

if TYPE_CHECKING:  # the fixtures' types; at run time a test module cannot import its conftest
    from services.broadcaster.tests.integration.conftest import Broadcasters, ChangeProducer, Kit

NAME = "broadcaster-pubsub"
QUIET = 1.0  # how long "no frame" is waited for: a frame from either copy arrives within milliseconds


@pytest.fixture(scope="module")
def url(broadcasters: Broadcasters) -> str:
    return broadcasters.start(NAME, LEADERBOARD_RECONCILE_INTERVAL_S="3600")


@pytest.fixture
async def redis(live_ns: Namespace, url: str) -> AsyncIterator[Redis]:
    """A client on the namespace's Redis, once the broadcaster listens on the changes channel (its
    subscription is not part of readiness: a message published before it would be lost)."""
    client = Redis.from_url(live_ns.settings().redis_url)
    channel = changes_channel(live_ns.settings().redis_prefix)
    try:
        for _ in range(200):
            if dict(await client.pubsub_numsub(channel)).get(channel.encode(), 0) >= 1:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail(f"the broadcaster never subscribed to {channel}")
        yield client
    finally:
        await client.aclose()


def on_the_wire(event: BoardChanged) -> list[dict[str, Any]]:
    """The top a frame carries for ``event``: the entries with their ``sharedRank`` (equal scores share
    the rank of the first of them)."""
    top: list[dict[str, Any]] = json.loads(event.model_dump_json(by_alias=True))["top"]
    out = []
    for i, e in enumerate(top):
        first = next(j for j in range(i + 1) if top[j]["score"] == e["score"])
        out.append({**e, "sharedRank": top[first]["rank"]})
    return out


async def by_pubsub(redis: Redis, ns: Namespace, raw: bytes) -> None:
    receivers = await redis.publish(changes_channel(ns.settings().redis_prefix), raw)
    # The broadcaster is subscribed, so the message did go out to it.
    assert receivers >= 1, f"nobody listens on the changes channel (published {raw[:60]!r})"


async def by_topic(feed: ChangeProducer, raw: bytes) -> None:
    await feed.producer.send_and_wait(feed.topic, raw, key=feed.board.encode())


async def recv_json(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


async def no_frame(ws: ClientConnection, within: float = QUIET) -> None:
    try:
        frame = await recv_json(ws, within)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected frame: {frame['type']} v{frame['version']} of {frame['epoch']}")


async def connect(url: str, kit: Kit) -> ClientConnection:
    """A client past its first frame (the state an earlier test left, or the empty board)."""
    ws = await websockets.connect(kit.ws_url(url), ping_interval=None, open_timeout=30)
    await recv_json(ws)
    return ws


def frame_of(frame: dict[str, Any]) -> tuple[str, str, int]:
    return frame["type"], frame["epoch"], frame["version"]


async def test_a_change_only_on_the_channel_reaches_clients_and_its_topic_copy_is_a_no_op(
    url: str, kit: Kit, live_ns: Namespace, redis: Redis, changes: Callable[[], ChangeProducer]
) -> None:
    feed = changes()
    ws = await connect(url, kit)
    try:
        first = feed.change(1)
        raw = first.to_bytes()
        await by_pubsub(redis, live_ns, raw)  # nothing on the topic
        frame = await recv_json(ws)
        # A new epoch reaches a client as a snapshot, with the top the record carries.
        assert frame_of(frame) == ("snapshot", feed.epoch, 1)
        assert frame["board"] == "global" and frame["top"] == on_the_wire(first)

        # The same bytes then on the topic: the hub already has version 1, no second frame.
        await by_topic(feed, raw)
        await no_frame(ws)

        # The topic on its own still works: a newer version that comes only through it is delivered
        # (and it is the next frame: the copy of version 1, before it in the partition, gave none).
        second = feed.change(2)
        await by_topic(feed, second.to_bytes())
        frame = await recv_json(ws)
        assert frame_of(frame) == ("update", feed.epoch, 2)
        assert frame["top"] == on_the_wire(second)
        assert frame["changed"]  # relative to version 1, which this client holds
        await no_frame(ws, 0.3)
    finally:
        await ws.close()

    # A client connecting now starts from the newest state.
    async with websockets.connect(kit.ws_url(url), ping_interval=None) as late:
        assert frame_of(await recv_json(late)) == ("snapshot", feed.epoch, 2)


async def test_the_first_copy_wins_whichever_path_it_takes(
    url: str, kit: Kit, live_ns: Namespace, redis: Redis, changes: Callable[[], ChangeProducer]
) -> None:
    """Each version sent on both paths, alternately the channel first and the topic first: every
    version gives exactly one frame, in order."""
    feed = changes()
    ws = await connect(url, kit)
    try:
        for version in range(1, 7):
            raw = feed.change(version).to_bytes()
            if version % 2:
                await by_pubsub(redis, live_ns, raw)
                await by_topic(feed, raw)
            else:
                await by_topic(feed, raw)
                await by_pubsub(redis, live_ns, raw)
            frame = await recv_json(ws)
            assert frame_of(frame) == ("snapshot" if version == 1 else "update", feed.epoch, version)
        await no_frame(ws)
    finally:
        await ws.close()


GARBAGE = [
    b"\x00\xff\xfe not even text",
    b"{truncated",
    b"",
    b"null",
    b"[1, 2, 3]",
    b'"a string"',
    json.dumps({"hello": "world"}).encode(),
]


def wrong_records(feed: ChangeProducer) -> list[bytes]:
    """JSON objects that look like a BoardChanged but are not one."""
    valid = json.loads(feed.change(50).to_bytes())
    return [
        json.dumps({**valid, "version": "fifty"}).encode(),
        json.dumps({**valid, "version": 0}).encode(),
        json.dumps({**valid, "schemaVersion": 9}).encode(),
        json.dumps({k: v for k, v in valid.items() if k != "epoch"}).encode(),
        json.dumps({**valid, "top": [{"rank": "first"}]}).encode(),
        json.dumps({**valid, "unknownField": 1}).encode(),
    ]


async def test_undecodable_channel_messages_are_ignored_and_both_paths_go_on(
    url: str,
    kit: Kit,
    live_ns: Namespace,
    redis: Redis,
    changes: Callable[[], ChangeProducer],
    broadcasters: Broadcasters,
) -> None:
    feed = changes()
    ws = await connect(url, kit)
    try:
        first = feed.change(1)
        await by_pubsub(redis, live_ns, first.to_bytes())
        assert frame_of(await recv_json(ws)) == ("snapshot", feed.epoch, 1)

        for raw in [*GARBAGE, *wrong_records(feed)]:
            await by_pubsub(redis, live_ns, raw)
        # The next valid change, right behind them on the same channel, without a topic copy: had any
        # of them broken the subscription, the resubscription would have lost it.
        second = feed.change(2)
        await by_pubsub(redis, live_ns, second.to_bytes())
        frame = await recv_json(ws, 5)
        assert frame_of(frame) == ("update", feed.epoch, 2)
        assert frame["top"] == on_the_wire(second)

        # And the topic: a change that comes only through it.
        third = feed.change(3)
        await by_topic(feed, third.to_bytes())
        assert frame_of(await recv_json(ws)) == ("update", feed.epoch, 3)
        await no_frame(ws)
    finally:
        await ws.close()

    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{url}/readyz")).status_code == 200
    running = broadcasters.supervisor.running[NAME]
    assert running.proc.poll() is None and running.restarts == 0  # the same process, still up
    log = (broadcasters.log_dir / f"{NAME}.log").read_text()
    assert log.count("ignoring an undecodable board change") >= len(GARBAGE) + len(wrong_records(feed))
    assert "subscription lost" not in log


async def test_an_older_version_on_the_channel_after_a_newer_one_from_the_topic_is_not_shown(
    url: str, kit: Kit, live_ns: Namespace, redis: Redis, changes: Callable[[], ChangeProducer]
) -> None:
    feed = changes()
    ws = await connect(url, kit)
    try:
        await feed.publish(3)  # versions 1-3, on the topic only
        frame = await recv_json(ws)
        while frame["version"] < 3:
            frame = await recv_json(ws)
        assert frame_of(frame) == ("update", feed.epoch, 3) and frame["top"] == feed.tops[3]

        # Late channel copies of older versions (a different top at version 2 too): nothing shown.
        await by_pubsub(redis, live_ns, feed.change(2).to_bytes())
        await by_pubsub(redis, live_ns, feed.change(1, size=4).to_bytes())
        other_two = feed.change(2, size=3).model_copy(update={"changed": [uuid.uuid4()]})
        await by_pubsub(redis, live_ns, other_two.to_bytes())
        await by_pubsub(redis, live_ns, feed.change(3, size=5).to_bytes())  # a repeat of the current one
        await no_frame(ws)
        async with websockets.connect(kit.ws_url(url), ping_interval=None) as fresh:
            snapshot = await recv_json(fresh)
            assert frame_of(snapshot) == ("snapshot", feed.epoch, 3) and snapshot["top"] == feed.tops[3]

        # A newer one on the channel still comes through, as the next frame.
        fourth = feed.change(4)
        await by_pubsub(redis, live_ns, fourth.to_bytes())
        frame = await recv_json(ws)
        assert frame_of(frame) == ("update", feed.epoch, 4) and frame["top"] == on_the_wire(fourth)
    finally:
        await ws.close()


async def test_a_message_nested_past_the_decoders_recursion_limit_is_ignored_too(
    url: str,
    kit: Kit,
    live_ns: Namespace,
    redis: Redis,
    changes: Callable[[], ChangeProducer],
    broadcasters: Broadcasters,
) -> None:
    """``json.loads`` raises RecursionError, not ValueError, for JSON nested deeper than the
    interpreter's recursion limit; like any other undecodable message it must cost nothing."""
    feed = changes()
    ws = await connect(url, kit)
    try:
        await by_pubsub(redis, live_ns, feed.change(1).to_bytes())
        assert frame_of(await recv_json(ws)) == ("snapshot", feed.epoch, 1)
        for raw in (b"[" * 100_000, b'{"a":' * 100_000):
            await by_pubsub(redis, live_ns, raw)
        await by_pubsub(redis, live_ns, feed.change(2).to_bytes())  # right behind, on the channel only
        assert frame_of(await recv_json(ws, 5)) == ("update", feed.epoch, 2)
    finally:
        await ws.close()
    assert "subscription lost" not in (broadcasters.log_dir / f"{NAME}.log").read_text()
