"""The drain's rules: jittered hints, every subscriber asked once, the wait for clients to go, and the
hand-back of SIGTERM to the server (the whole path runs against a real process in
tests/integration/test_drain.py)."""

from __future__ import annotations

import asyncio
import functools
import random
import signal
from types import FrameType

import pytest

from leaderboard.broadcaster.drain import Drain, stop_server


def test_hints_are_jittered_around_the_setting() -> None:
    drain = Drain(2000, 1.0, random.Random(7))
    hints = [drain.hint_ms() for _ in range(1_000)]
    assert 1000 <= min(hints) < 1100 and 2900 < max(hints) <= 3000
    assert len(set(hints)) > 500  # spread, not a handful of values
    assert Drain(0, 1.0).hint_ms() == 0


def test_every_subscriber_is_asked_once_with_its_own_hint() -> None:
    drain = Drain(1000, 1.0, random.Random(1))
    asked: list[tuple[str, int]] = []
    for name in "abc":
        drain.subscribe(functools.partial(lambda n, ms: asked.append((n, ms)), name))
    gone = drain.subscribe(lambda ms: asked.append(("gone", ms)))
    gone()  # unsubscribed (the connection ended first): not asked

    def broken(ms: int) -> None:
        raise RuntimeError("a broken connection")

    drain.subscribe(broken)
    assert not drain.draining
    assert drain.begin() == 4
    assert drain.draining and sorted(n for n, _ in asked) == ["a", "b", "c"]
    assert all(500 <= ms <= 1500 for _, ms in asked) and len({ms for _, ms in asked}) == 3
    assert drain.begin() == 0 and len(asked) == 3  # idempotent
    drain.subscribe(lambda ms: asked.append(("late", ms)))  # after the start: asked at once
    assert asked[-1][0] == "late"


async def test_wait_gone_returns_when_the_clients_are_gone_or_the_timeout_passes() -> None:
    left = [3]

    async def leave() -> None:
        while left[0]:
            await asyncio.sleep(0.01)
            left[0] -= 1

    task = asyncio.create_task(leave())
    assert await Drain(1000, 5.0).wait_gone(lambda: left[0]) == 0
    await task
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await Drain(1000, 0.1).wait_gone(lambda: 2) == 2
    assert 0.1 <= loop.time() - started < 1.0


class FakeUvicorn:
    """What the drain relies on in uvicorn.Server: its SIGTERM handler is a bound method of an
    object with ``should_exit``."""

    def __init__(self) -> None:
        self.should_exit = False
        self.signals: list[int] = []

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.signals.append(sig)
        self.should_exit = True


def test_stop_server_asks_uvicorn_to_exit_without_recording_the_signal() -> None:
    server = FakeUvicorn()
    stop_server(server.handle_exit, signal.SIGTERM, None)
    assert server.should_exit and server.signals == []  # no re-raise after shutdown: exit status 0
    seen: list[int] = []
    stop_server(lambda sig, frame: seen.append(sig), signal.SIGTERM, None)  # another server
    assert seen == [signal.SIGTERM]


async def test_sigterm_hook_drains_then_stops_the_server_and_unhooks() -> None:
    server = FakeUvicorn()
    previous = signal.signal(signal.SIGTERM, server.handle_exit)
    try:
        drain = Drain(1000, 5.0)
        clients = {"a", "b"}
        asked: list[str] = []
        for name in sorted(clients):
            drain.subscribe(functools.partial(lambda n, ms: asked.append(n), name))
        unhook = drain.hook_sigterm(lambda: len(clients))
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler) and handler != server.handle_exit
        handler(signal.SIGTERM, None)  # what the interpreter calls on SIGTERM
        for _ in range(100):
            if drain.draining:
                break
            await asyncio.sleep(0.01)
        assert sorted(asked) == ["a", "b"]
        await asyncio.sleep(0.1)
        assert not server.should_exit  # clients still connected: the server keeps running
        clients.clear()
        for _ in range(100):
            if server.should_exit:
                break
            await asyncio.sleep(0.01)
        assert server.should_exit and server.signals == []
        handler(signal.SIGTERM, None)  # a second SIGTERM goes straight to the server
        assert server.signals == [signal.SIGTERM]
        unhook()
        assert signal.getsignal(signal.SIGTERM) == server.handle_exit
    finally:
        signal.signal(signal.SIGTERM, previous)


async def test_no_hook_outside_the_main_thread() -> None:
    before = signal.getsignal(signal.SIGTERM)

    def hook_in_thread() -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(_hook_and_unhook())
        finally:
            loop.close()

    await asyncio.to_thread(hook_in_thread)
    assert signal.getsignal(signal.SIGTERM) == before


async def _hook_and_unhook() -> None:
    Drain(1000, 1.0).hook_sigterm(lambda: 0)()


@pytest.fixture(autouse=True)
def _sigterm_restored() -> object:
    before = signal.getsignal(signal.SIGTERM)
    yield
    assert signal.getsignal(signal.SIGTERM) == before
