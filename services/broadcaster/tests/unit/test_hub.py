"""The hub's version rules and coalescing, with in-memory clients (no sockets)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from leaderboard.broadcaster.hub import (
    FANOUT_BUCKETS,
    STATS,
    BoardState,
    Client,
    FanoutStats,
    Hub,
    diff,
)


def entry(user: str, rank: int, score: int) -> dict[str, Any]:
    return {"rank": rank, "userId": user, "username": user.upper(), "score": score}


def state(version: int, epoch: str = "e1", top: list[dict[str, Any]] | None = None) -> BoardState:
    return BoardState("global", epoch, version, top if top is not None else [entry("a", 1, version)])


class Recorder:
    """A client whose socket takes ``delay`` seconds per frame (or never finishes when None)."""

    def __init__(self, hub: Hub, delay: float | None = 0.0) -> None:
        self.frames: list[dict[str, Any]] = []
        self.delay = delay
        self.client = Client(hub, "global", self.send, "ws")

    async def send(self, text: str, st: BoardState, kind: str) -> None:
        if self.delay is None:
            await asyncio.Event().wait()
        elif self.delay:
            await asyncio.sleep(self.delay)
        self.frames.append(json.loads(text))

    @property
    def versions(self) -> list[int]:
        return [f["version"] for f in self.frames]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_snapshot_then_strictly_increasing_updates() -> None:
    hub = Hub(history_size=8, send_timeout=5)
    hub.publish(state(1))
    r = Recorder(hub)
    hub.attach(r.client)
    task = asyncio.create_task(r.client.run())
    await settle()
    for v in (2, 3, 3, 2, 4):  # repeats and stale versions are ignored
        hub.publish(state(v))
        await settle()
    hub.detach(r.client)
    await task
    assert [f["type"] for f in r.frames] == ["snapshot", "update", "update", "update"]
    assert r.versions == [1, 2, 3, 4]
    assert r.frames[1]["changed"] == ["a"]


async def test_slow_client_is_coalesced_to_the_latest_state() -> None:
    hub = Hub(history_size=8, send_timeout=5)
    hub.publish(state(1))
    slow, fast = Recorder(hub, delay=0.05), Recorder(hub)
    for r in (slow, fast):
        hub.attach(r.client)
    tasks = [asyncio.create_task(r.client.run()) for r in (slow, fast)]
    before = STATS.coalesced
    for v in range(2, 30):
        hub.publish(state(v))
        await asyncio.sleep(0.002)
    await asyncio.sleep(0.2)
    for r in (slow, fast):
        hub.detach(r.client)
    await asyncio.gather(*tasks)
    assert fast.versions[-1] == slow.versions[-1] == 29
    assert slow.versions == sorted(set(slow.versions)) and len(slow.versions) < len(fast.versions)
    assert STATS.coalesced > before


async def test_stuck_client_is_dropped_without_delaying_others() -> None:
    hub = Hub(history_size=8, send_timeout=0.2)
    hub.publish(state(1))
    stuck, fine = Recorder(hub, delay=None), Recorder(hub)
    for r in (stuck, fine):
        hub.attach(r.client)
    tasks = [asyncio.create_task(r.client.run()) for r in (stuck, fine)]
    dropped = STATS.dropped
    await settle()
    hub.publish(state(2))
    await settle()
    assert fine.versions == [1, 2]
    await asyncio.wait_for(tasks[0], 2)  # the stuck writer gives up on its own
    assert stuck.client.closed and STATS.dropped == dropped + 1
    hub.detach(fine.client)
    await tasks[1]


async def test_resume_with_since_gets_the_missed_state_or_nothing() -> None:
    hub = Hub(history_size=4, send_timeout=5)
    for v in range(1, 8):
        hub.publish(state(v))
    cases = {
        ("e1", 5): ("update", 7),  # in history: an update from there
        ("e1", 7): None,  # current: nothing until the next change
        ("e1", 1): ("snapshot", 7),  # evicted from history: a snapshot
        ("e1", 99): ("snapshot", 7),  # ahead of us: a snapshot (the app catches up from Redis first)
        ("e0", 5): ("snapshot", 7),  # another epoch
        (None, 5): ("snapshot", 7),
    }
    for (epoch, since), expected in cases.items():
        r = Recorder(hub)
        hub.attach(r.client, epoch, since)
        task = asyncio.create_task(r.client.run())
        await settle()
        hub.detach(r.client)
        await task
        got = (r.frames[0]["type"], r.frames[0]["version"]) if r.frames else None
        assert got == expected, (epoch, since)


async def test_new_epoch_sends_a_snapshot_and_late_old_epoch_messages_are_ignored() -> None:
    hub = Hub(history_size=8, send_timeout=5)
    hub.publish(state(5, "old"))
    r = Recorder(hub)
    hub.attach(r.client)
    task = asyncio.create_task(r.client.run())
    await settle()
    assert hub.publish(state(3, "new"))
    await settle()
    assert not hub.publish(state(6, "old"))  # a lagging replica's message from the left epoch
    assert hub.publish(state(4, "new"))
    await settle()
    hub.detach(r.client)
    await task
    assert [(f["type"], f["epoch"], f["version"]) for f in r.frames] == [
        ("snapshot", "old", 5),
        ("snapshot", "new", 3),
        ("update", "new", 4),
    ]


def test_diff_names_moved_new_and_dropped_users() -> None:
    old = [entry("a", 1, 10), entry("b", 2, 5), entry("c", 3, 1)]
    new = [entry("b", 1, 20), entry("a", 2, 10), entry("d", 3, 2)]
    assert sorted(diff(old, new)) == ["a", "b", "c", "d"]
    assert diff(old, old) == []


def fanout_count() -> int:
    return sum(STATS.buckets)


async def test_fanout_delay_times_live_changes_not_the_snapshot_a_client_joins_with() -> None:
    hub = Hub(history_size=8, send_timeout=5)
    hub.publish(state(1))
    r = Recorder(hub)
    observed, sent = fanout_count(), STATS.sent
    hub.attach(r.client)  # starts from the state the hub already holds: not a fan-out
    task = asyncio.create_task(r.client.run())
    await settle()
    assert r.versions == [1] and fanout_count() == observed and STATS.sent == sent + 1
    hub.publish(state(2))  # a change fanned out now
    await settle()
    assert r.versions == [1, 2] and fanout_count() == observed + 1 and STATS.sent == sent + 2
    hub.detach(r.client)
    await task


async def test_a_client_gets_the_empty_board_at_once_then_the_first_state_without_a_gap() -> None:
    hub = Hub(history_size=8, send_timeout=5)
    early, resumed = Recorder(hub), Recorder(hub)
    hub.attach(early.client)  # nothing published yet: no score, or the scorer has not built the board
    hub.attach(resumed.client, "", 0)  # already holds the empty board: nothing new to send
    tasks = [asyncio.create_task(r.client.run()) for r in (early, resumed)]
    await settle()
    assert [(f["type"], f["epoch"], f["version"], f["top"]) for f in early.frames] == [
        ("snapshot", "", 0, [])
    ]
    assert resumed.frames == []
    hub.publish(state(0, top=[]))  # the scorer's board, still empty
    await settle()
    hub.publish(state(1))  # the first score
    await settle()
    for r in (early, resumed):
        hub.detach(r.client)
    await asyncio.gather(*tasks)
    for r in (early, resumed):
        kinds = [(f["type"], f["epoch"], f["version"]) for f in r.frames]
        assert kinds[-2:] == [("snapshot", "e1", 0), ("update", "e1", 1)]
        assert r.frames[-1]["changed"] == ["a"]


async def test_fan_out_writes_in_publish_itself_with_no_task_per_client() -> None:
    """The broadcast guide's pattern: a socket that takes the frame gets it during ``publish``;
    only a client whose send has to wait gets a task, and it leaves the others unaffected."""
    hub = Hub(history_size=8, send_timeout=5)
    hub.publish(state(1))
    tasks_before = len(asyncio.all_tasks())
    fast = [Recorder(hub) for _ in range(50)]
    slow = Recorder(hub, delay=0.05)
    for r in [*fast, slow]:
        hub.attach(r.client)
    assert all(r.versions == [1] for r in fast)  # the snapshot is written on attach, no waiting
    assert len(asyncio.all_tasks()) == tasks_before + 1  # the slow client's pending send alone
    hub.publish(state(2))
    assert all(r.versions == [1, 2] for r in fast)  # written inside publish
    assert len(asyncio.all_tasks()) == tasks_before + 1
    for _ in range(100):
        if slow.versions == [1, 2]:
            break
        await asyncio.sleep(0.01)
    assert slow.versions == [1, 2]
    for r in [*fast, slow]:
        hub.detach(r.client)
    await settle()
    assert len(asyncio.all_tasks()) == tasks_before


def test_the_plain_counters_expose_what_prometheus_client_metrics_would() -> None:
    """The same frames counted by FanoutStats and by prometheus_client's own Counter and Histogram
    give the same exposition text (names, help, labels, cumulative buckets, sum and count)."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    stats = FanoutStats()
    ours.register(stats)
    sent = Counter("broadcaster_messages_sent", "Frames written to clients", registry=theirs)
    coalesced = Counter(
        "broadcaster_coalesced",
        "Frames replaced by a newer one before a slow client took them",
        registry=theirs,
    )
    dropped = Counter("broadcaster_dropped", "Clients disconnected for not keeping up", registry=theirs)
    fanout = Histogram(
        "broadcaster_fanout_seconds",
        "From a board change reaching this instance to its frame leaving for a client",
        buckets=FANOUT_BUCKETS,
        registry=theirs,
    )
    # On a bound, between bounds, past the last one, zero.
    delays = [0.0, 0.001, 0.0011, 0.004, 0.01, 0.3, 1.0, 2.5, 4.9, 5.0, 7.5, 0.0005, 0.07]
    for d in delays:
        stats.sent += 1
        sent.inc()
        stats.observe(d)
        fanout.observe(d)
    for _ in range(3):
        stats.coalesced += 1
        coalesced.inc()
    stats.dropped += 1
    dropped.inc()

    def exposition(registry: CollectorRegistry) -> list[str]:
        # prometheus_client's own counters also export a _created sample: not part of the comparison.
        return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]

    assert exposition(ours) == exposition(theirs)
    assert 'broadcaster_fanout_seconds_bucket{le="5.0"} 12.0' in exposition(ours)


class DirectWriter(Client):
    """A client whose socket takes a frame at once while ``open`` (``write_now``, tried first by
    ``_write`` too), else through its ``send``, which waits ``delay`` seconds: the shape of the
    WebSocket client (``routes.live.LiveSocket``)."""

    def __init__(self, hub: Hub, delay: float = 0.05) -> None:
        super().__init__(hub, "global", self._slow, "ws")
        self.frames: list[tuple[str, dict[str, Any]]] = []  # (how, frame)
        self.open = True
        self.delay = delay

    def write_now(self, text: str) -> bool:
        if self.open:
            self.frames.append(("direct", json.loads(text)))
        return self.open

    def _write(self, text: str, state: BoardState, kind: str) -> Awaitable[None] | None:
        return None if self.write_now(text) else super()._write(text, state, kind)

    async def _slow(self, text: str, st: BoardState, kind: str) -> None:
        await asyncio.sleep(self.delay)
        self.frames.append(("send", json.loads(text)))


async def test_fan_out_writes_up_to_date_clients_directly_and_the_rest_as_before() -> None:
    """The hub's direct write: one shared update for every client that holds the current state and
    has nothing pending; a client whose socket cannot take it (or that is behind, or resumed from an
    older version) gets its frame through ``offer``, coalesced and in order as always."""
    hub = Hub(history_size=8, send_timeout=5)
    for v in (1, 2):
        hub.publish(state(v, top=[entry("a", 1, v), entry("b", 2, 0)]))
    up_to_date, blocked, resumed = DirectWriter(hub), DirectWriter(hub), DirectWriter(hub)
    hub.attach(up_to_date)
    hub.attach(blocked)
    hub.attach(resumed, "e1", 1)  # from version 1: its first frame is the update 1 -> 2
    assert [(how, f["type"], f["version"]) for how, f in resumed.frames] == [("direct", "update", 2)]
    blocked.open = False
    sent_before = STATS.sent
    for v in (3, 4, 5):
        hub.publish(state(v, top=[entry("a", 1, v), entry("b", 2, 0)]))
    assert STATS.sent - sent_before == 2 * 3  # two written at once per change; the third still sending
    for c in (up_to_date, resumed):
        assert [(how, f["version"], f["changed"]) for how, f in c.frames[1:]] == [
            ("direct", 3, ["a"]),
            ("direct", 4, ["a"]),
            ("direct", 5, ["a"]),
        ]
    for _ in range(100):
        if blocked.frames and blocked.frames[-1][1]["version"] == 5:
            break
        await asyncio.sleep(0.01)
    # Its send of 3 was pending while 4 and 5 came: coalesced to 5, the update from what it holds.
    assert [(how, f["version"]) for how, f in blocked.frames] == [("direct", 2), ("send", 3), ("send", 5)]
    assert blocked.frames[-1][1]["changed"] == ["a"]
    blocked.open = True
    hub.publish(state(6, top=[entry("a", 1, 6), entry("b", 2, 0)]))
    assert blocked.frames[-1] == ("direct", up_to_date.frames[-1][1])  # caught up: direct again
    for c in (up_to_date, blocked, resumed):
        hub.detach(c)
