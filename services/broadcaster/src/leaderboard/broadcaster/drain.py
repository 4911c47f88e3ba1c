"""Leaving without a stampede: what the broadcaster does between SIGTERM and its exit.

A rolling deploy stops instances one by one. Left to uvicorn, every WebSocket gets a bare close
(1012, no reason) at the same instant and every client reconnects at once, onto the instances still
running. Instead, on SIGTERM the drain:

1. marks the instance as draining: ``/readyz`` answers 503 and new live clients are refused (503
   with ``Retry-After``), reads still work;
2. tells every live client to go, each with its own jittered delay (:meth:`Drain.hint_ms`, uniform
   in 0.5-1.5 x ``drain_retry_ms``): WebSockets get close code 1012 (service restart) with the
   reason ``{"retryAfterMs": N}``, SSE streams a final ``retry: N`` and end. Clients resume with
   ``since``/``epoch`` (or ``Last-Event-ID``) on another instance: the missed state or a snapshot;
3. waits until they are gone (at most ``drain_timeout_s``), then lets the server stop as it would
   have: it stops accepting, waits for what is left (uvicorn's graceful timeout) and runs the
   lifespan shutdown.

uvicorn runs the lifespan shutdown only *after* its connections are closed, so the drain cannot
live there: it takes SIGTERM from uvicorn's handler (installed before the lifespan starts) and hands
it back once the clients are gone. A drained stop is a clean exit: the drain asks uvicorn to stop
(``Server.should_exit``) rather than passing the signal on, which uvicorn would re-raise after its
shutdown (exit status -15). Should the server not be uvicorn, the signal goes to the previous handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[int, FrameType | None], Any] | int | None


class Drain:
    def __init__(self, retry_ms: int, timeout_s: float, rng: random.Random | None = None) -> None:
        self.retry_ms, self.timeout_s = retry_ms, timeout_s
        self._rng = rng or random.Random()  # jitter, not a secret: no need for secrets
        self._subscribers: set[Callable[[int], None]] = set()
        self._started = False
        self._task: asyncio.Task[None] | None = None

    @property
    def draining(self) -> bool:
        return self._started

    def hint_ms(self) -> int:
        """One client's reconnect delay: its own draw, so that clients spread out over a second or so."""
        return round(self.retry_ms * self._rng.uniform(0.5, 1.5))

    def subscribe(self, leave: Callable[[int], None]) -> Callable[[], None]:
        """``leave(retry_ms)`` is called once when the drain begins (at once if it has); returns the
        unsubscribe function. ``leave`` must not block: it wakes the connection's own task."""
        if self._started:
            leave(self.hint_ms())
            return lambda: None
        self._subscribers.add(leave)
        return lambda: self._subscribers.discard(leave)

    def begin(self) -> int:
        """Ask every live client to leave; returns how many were asked. Idempotent."""
        if self._started:
            return 0
        self._started = True
        asked = list(self._subscribers)
        self._subscribers.clear()
        for leave in asked:
            try:
                leave(self.hint_ms())
            except Exception:  # one broken connection must not keep the others
                log.exception("asking a live client to leave failed")
        log.info("draining: asked %d live clients to reconnect elsewhere", len(asked))
        return len(asked)

    async def wait_gone(self, remaining: Callable[[], int]) -> int:
        """Wait until ``remaining()`` is 0 or ``timeout_s`` has passed; returns what is left."""
        deadline = time.monotonic() + self.timeout_s
        while (left := remaining()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return left

    def hook_sigterm(self, remaining: Callable[[], int]) -> Callable[[], None]:
        """Take SIGTERM from whoever holds it (uvicorn), drain, then stop the server. Returns the
        function that restores the previous handler. No-op outside the main thread (tests' portals)."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop = asyncio.get_running_loop()
        previous: Handler = signal.getsignal(signal.SIGTERM)

        def on_sigterm(sig: int, frame: FrameType | None) -> None:
            if self._started:  # a second SIGTERM: stop now, as the server would
                pass_on(previous, sig, frame)
                return
            loop.call_soon_threadsafe(self._start, remaining, previous, sig, frame)

        signal.signal(signal.SIGTERM, on_sigterm)

        def unhook() -> None:
            if signal.getsignal(signal.SIGTERM) is on_sigterm:
                signal.signal(signal.SIGTERM, previous)

        return unhook

    def _start(
        self, remaining: Callable[[], int], previous: Handler, sig: int, frame: FrameType | None
    ) -> None:
        self._task = asyncio.create_task(self._drain_then_stop(remaining, previous, sig, frame))

    async def _drain_then_stop(
        self, remaining: Callable[[], int], previous: Handler, sig: int, frame: FrameType | None
    ) -> None:
        started = time.monotonic()
        try:
            self.begin()
            left = await self.wait_gone(remaining)
            log.info(
                "drained in %.2fs (%d live clients left to the server's shutdown)",
                time.monotonic() - started,
                left,
            )
        finally:
            stop_server(previous, sig, frame)


def stop_server(previous: Handler, sig: int, frame: FrameType | None) -> None:
    """Stop the server that held the signal: uvicorn through ``should_exit`` (a clean exit, see the
    module docstring), anything else by passing the signal on."""
    server = getattr(previous, "__self__", None)
    if server is not None and hasattr(server, "should_exit"):
        server.should_exit = True
        return
    pass_on(previous, sig, frame)


def pass_on(previous: Handler, sig: int, frame: FrameType | None) -> None:
    if callable(previous):
        previous(sig, frame)
        return
    with contextlib.suppress(ValueError):  # not the main thread: nothing more to do
        signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        signal.raise_signal(sig)
