"""In-memory board state and fan-out to live clients, as python-websockets' broadcast guide advises.

No awaiting each client in turn: a frame is written to every client at once (a non-blocking write
per connection, as the guide's ``broadcast()``), and a client whose socket is full gets a task that
finishes its frame, plus a one-slot mailbox. Publishing a new state meanwhile only replaces the
slot's content, so a slow client is *coalesced* to the latest state (the intermediate versions are
skipped, never reordered) and a stuck client is *dropped* after ``send_timeout``; neither delays
the others nor grows memory. No task per client otherwise (see :class:`Client`).

Frames: ``snapshot`` (first frame, or after an epoch change) and ``update`` with strictly increasing
versions and ``changed`` relative to what *that* client last received. Every frame carries the whole
top, so skipping intermediate versions never leaves a client with a gap in its state.

Before any state of a board has reached this instance (no score yet, or the scorer has not built
the board), a client still gets its snapshot at once: the empty board, epoch ``""`` and version 0
(:data:`NO_EPOCH`, as the REST read of such a board answers). The first real state then reaches it
as the snapshot of the board's epoch, so nothing is missed and versions never go back.

Epochs: a rebuilt board starts a new epoch. Once an instance has moved to a new epoch it ignores
late messages of the epochs it left (a lagging scorer replica), so a client never goes back.

Why no library: the pattern is twenty lines (the guide's "per-client queues", with a queue of one
that keeps only the latest state); broadcaster libraries (``broadcaster``, ``socketio``) add a
transport of their own but neither coalescing nor the version rules.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import CoroutineType
from typing import Any

from prometheus_client import REGISTRY, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from leaderboard.common.ranking import changed_entries

log = logging.getLogger(__name__)
CLIENTS = Gauge("broadcaster_clients", "Connected live clients", ["transport"])
FANOUT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class FanoutStats:
    """The fan-out's counters and its delay histogram, as plain integers, exported at scrape time.

    They are counted once per frame per client: at 5,000 clients, prometheus_client's ``Counter.inc``
    and ``Histogram.observe`` (a lock each per value, a bucket search per observation) were ~9% of the
    fan-out (py-spy, issue 12). The event loop is the only writer, so plain integers need no lock; a
    scrape from another thread reads a value at most one frame old. Exported as
    ``broadcaster_messages_sent_total``, ``broadcaster_coalesced_total``,
    ``broadcaster_dropped_total`` and ``broadcaster_fanout_seconds`` (the names they always had)."""

    __slots__ = ("buckets", "coalesced", "delay_sum", "dropped", "sent")

    def __init__(self) -> None:
        self.sent = self.coalesced = self.dropped = 0
        self.buckets = [0] * (len(FANOUT_BUCKETS) + 1)  # per bound, then +Inf; not cumulative
        self.delay_sum = 0.0

    def observe(self, delay: float) -> None:
        """One frame written, ``delay`` seconds after its change reached this instance."""
        self.delay_sum += delay
        self.buckets[bisect.bisect_left(FANOUT_BUCKETS, delay)] += 1

    def collect(self) -> list[Metric]:
        sent = CounterMetricFamily("broadcaster_messages_sent", "Frames written to clients")
        sent.add_metric([], self.sent)
        coalesced = CounterMetricFamily(
            "broadcaster_coalesced", "Frames replaced by a newer one before a slow client took them"
        )
        coalesced.add_metric([], self.coalesced)
        dropped = CounterMetricFamily("broadcaster_dropped", "Clients disconnected for not keeping up")
        dropped.add_metric([], self.dropped)
        cumulative, total = [], 0
        for bound, count in zip((*map(str, map(float, FANOUT_BUCKETS)), "+Inf"), self.buckets, strict=True):
            total += count
            cumulative.append((bound, total))
        fanout = HistogramMetricFamily(
            "broadcaster_fanout_seconds",
            "From a board change reaching this instance to its frame leaving for a client",
            buckets=cumulative,
            sum_value=self.delay_sum,
        )
        return [sent, coalesced, dropped, fanout]


STATS = FanoutStats()
REGISTRY.register(STATS)

Entry = dict[str, Any]
NO_EPOCH = ""  # the epoch of the empty board a client sees before this instance holds any state


@dataclass(frozen=True)
class BoardState:
    board: str
    epoch: str
    version: int
    top: list[Entry]
    received: float = field(default_factory=time.monotonic)

    @functools.cached_property
    def snapshot(self) -> str:
        """Serialised once per state, however many clients start from it."""
        return self.frame("snapshot")

    def frame(self, kind: str, changed: list[str] | None = None) -> str:
        body: dict[str, Any] = {
            "type": kind,
            "board": self.board,
            "epoch": self.epoch,
            "version": self.version,
            "top": self.top,
        }
        if kind == "update":
            body["changed"] = changed or []
        return json.dumps(body, separators=(",", ":"))


diff = changed_entries  # the one rank diff (``leaderboard.common.ranking``), per client here


class Client:
    """One subscriber. ``send`` writes one text frame (WebSocket or SSE).

    No task per client: a frame is written at once, inside :meth:`Hub.publish` (the broadcast
    guide's ``broadcast()``: a non-blocking write per connection). ``send`` is a coroutine that
    completes without suspending while the socket takes data (uvicorn's ``send`` only waits when the
    transport's buffer is past its high-water mark), so it is driven synchronously; only when it
    does suspend (a slow peer) does the rest of it get a task, bounded by ``send_timeout``, and the
    states published meanwhile wait in the one-slot mailbox, coalesced to the latest.
    ``on_close`` is called once when the client is dropped, gone or detached. A subclass whose
    socket can take a frame synchronously says so with :meth:`write_now`, which the hub's fan-out
    tries first for a client that is up to date and has nothing pending.
    """

    __slots__ = (
        "_busy",
        "_closed",
        "_next",
        "_next_kind",
        "_next_live",
        "_send",
        "_waiter",
        "board",
        "hub",
        "last",
        "on_close",
        "transport",
    )

    def __init__(
        self,
        hub: Hub,
        board: str,
        send: Callable[[str, BoardState, str], Awaitable[None]] | None,
        transport: str,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.hub, self.board, self._send, self.transport = hub, board, send, transport
        self.last: BoardState | None = None
        self._next: BoardState | None = None
        self._next_kind = "update"
        self._next_live = True
        self._busy: asyncio.Task[None] | None = None  # a send that had to wait for the peer
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        self.on_close = on_close

    @property
    def closed(self) -> bool:
        return self._closed

    def _write(self, text: str, state: BoardState, kind: str) -> Awaitable[None] | None:
        """One frame to the peer: ``send``. A subclass may write itself instead (and pass no ``send``),
        returning None when the frame was written at once."""
        assert self._send is not None, "a client without send must override _write"
        return self._send(text, state, kind)

    def write_now(self, text: str) -> bool:
        """Write ``text`` at once if this client's transport can without waiting (True), else write
        nothing (False). None can here; a subclass that writes to its socket itself may."""
        return False

    def _on_closed(self) -> None:
        """Called once when the client is closed: ``on_close``; a subclass may override it."""
        if self.on_close is not None:
            self.on_close()

    def offer(self, state: BoardState, kind: str = "update", live: bool = True) -> None:
        """Put ``state`` in the one-slot mailbox and write it now unless a send is still pending.
        ``live``: a change being fanned out now (timed by the fan-out histogram), rather than the
        state a (re)connecting client starts from."""
        if self._closed:
            return
        self._next_live = live
        if self._next is not None:
            STATS.coalesced += 1
            if kind == "snapshot":
                self._next_kind = "snapshot"
        else:
            self._next_kind = kind
        self._next = state
        if self._busy is None:
            self._flush()

    def _flush(self) -> None:
        """Write what the mailbox holds; hand the rest of a send that suspends to a task."""
        while not self._closed and self._next is not None:
            state, kind, live = self._next, self._next_kind, self._next_live
            self._next = None
            if self.last is not None and kind == "update" and state.epoch != self.last.epoch:
                kind = "snapshot"
            if kind == "update" and self.last is not None and state.version <= self.last.version:
                continue  # never an older or repeated state
            if kind == "snapshot" or self.last is None:
                text, kind = state.snapshot, "snapshot"
            else:
                text = self.hub.update_frame(self.last, state)
            coro = self._write(text, state, kind)
            if coro is None:  # written already
                self._sent(state, live)
                continue
            if type(coro) is not CoroutineType:
                coro = _awaiting(coro)  # an awaitable that is not a coroutine: driven the same way
            try:
                waiting = coro.send(None)
            except StopIteration:
                self._sent(state, live)
                continue
            except Exception as exc:  # the peer went away mid-frame
                log.debug("%s client gone: %s", self.transport, exc)
                self.close()
                return
            self._busy = asyncio.get_running_loop().create_task(self._finish(coro, waiting, state, live))
            return

    async def _finish(self, coro: Any, waiting: Any, state: BoardState, live: bool) -> None:
        """The rest of a send that suspended: drive it to its end within ``send_timeout``."""
        try:
            async with asyncio.timeout(self.hub.send_timeout):
                while True:
                    if waiting is None:
                        await asyncio.sleep(0)
                    else:
                        # What a task does with a future its coroutine yields: take it over, wait.
                        waiting._asyncio_future_blocking = False
                        with contextlib.suppress(Exception):
                            await waiting  # its outcome reaches the send when resumed
                    try:
                        waiting = coro.send(None)
                    except StopIteration:
                        break
        except TimeoutError:
            coro.close()
            STATS.dropped += 1
            log.info(
                "dropping a %s client that did not take a frame within %.0fs",
                self.transport,
                self.hub.send_timeout,
            )
            self.close()
            return
        except asyncio.CancelledError:
            coro.close()
            raise
        except Exception as exc:  # the peer went away mid-frame
            log.debug("%s client gone: %s", self.transport, exc)
            self.close()
            return
        self._busy = None
        self._sent(state, live)
        self._flush()

    def _sent(self, state: BoardState, live: bool) -> None:
        self.last = state
        STATS.sent += 1
        if live:
            STATS.observe(time.monotonic() - state.received)

    def close(self) -> None:
        """Stop writing (idempotent): cancels a pending send and calls ``on_close`` once."""
        if self._closed:
            return
        self._closed = True
        self._next = None
        busy, self._busy = self._busy, None
        if busy is not None and busy is not asyncio.current_task():
            busy.cancel()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        try:
            self._on_closed()
        except Exception:  # one broken callback must not stop a fan-out
            log.exception("closing a %s client failed", self.transport)

    async def run(self) -> None:
        """Wait until the client is closed (dropped, gone or detached)."""
        if self._closed:
            return
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._waiter)


async def _awaiting(awaitable: Awaitable[None]) -> None:
    await awaitable


class Hub:
    def __init__(self, history_size: int, send_timeout: float) -> None:
        self.send_timeout = send_timeout
        self.states: dict[str, BoardState] = {}
        self.history: dict[str, OrderedDict[int, BoardState]] = {}
        self.clients: dict[str, set[Client]] = {}
        self._history_size = history_size
        self._frames: dict[tuple[str, int, int], str] = {}
        self.retired: dict[str, OrderedDict[str, None]] = {}

    def current(self, board: str) -> BoardState | None:
        return self.states.get(board)

    def publish(self, state: BoardState) -> bool:
        """Adopt ``state`` if it is newer (or of a new epoch) and offer it to every client of its board."""
        cur = self.states.get(state.board)
        if cur is not None and cur.epoch == state.epoch and state.version <= cur.version:
            return False
        retired = self.retired.setdefault(state.board, OrderedDict())
        if state.epoch in retired:
            return False  # a late message from an epoch this board has left
        new_epoch = cur is None or cur.epoch != state.epoch
        if cur is not None and new_epoch:
            retired[cur.epoch] = None
            while len(retired) > 64:
                retired.popitem(last=False)
        self.states[state.board] = state
        hist = self.history.setdefault(state.board, OrderedDict())
        if new_epoch:
            hist.clear()
        hist[state.version] = state
        while len(hist) > self._history_size:
            hist.popitem(last=False)
        if len(self._frames) > 64:
            self._frames.clear()
        kind = "snapshot" if new_epoch and cur is not None else "update"
        clients = list(self.clients.get(state.board, ()))
        if new_epoch or cur is None:
            for client in clients:
                client.offer(state, kind)
            return True
        # What ``offer`` does for a client that holds ``cur`` and has nothing pending, without its
        # calls: the one update frame from ``cur``, written now when the client can (``write_now``);
        # any other client goes through ``offer``. Per client, the fan-out is the socket write plus
        # this Python, which was 40% of it through uvicorn's ``send`` (py-spy, 5,000 clients, issue 12).
        text = None
        for client in clients:
            if client.last is cur and client._next is None and client._busy is None and not client._closed:
                if text is None:
                    text = self.update_frame(cur, state)
                if client.write_now(text):
                    client._sent(state, True)
                    continue
            client.offer(state, kind)
        return True

    def update_frame(self, last: BoardState, state: BoardState) -> str:
        """One serialised frame per (from, to) pair, shared by every client that needs it."""
        key = (state.epoch, last.version, state.version)
        text = self._frames.get(key)
        if text is None:
            text = state.frame("update", diff(last.top, state.top))
            self._frames[key] = text
        return text

    def attach(self, client: Client, epoch: str | None = None, since: int | None = None) -> None:
        """Subscribe a client. Without ``since`` (or from another epoch, or ahead of us) it gets a
        snapshot; with a ``since`` we still hold, an update from that version; when it is already
        current, nothing until the next change. Never a gap, never an older state."""
        self.clients.setdefault(client.board, set()).add(client)
        CLIENTS.labels(client.transport).inc()
        cur = self.states.get(client.board)
        if cur is None:
            empty = BoardState(client.board, NO_EPOCH, 0, [])
            if since == 0 and epoch == NO_EPOCH:
                client.last = empty  # it holds exactly that already
            else:
                client.offer(empty, "snapshot", live=False)
            return  # the first published state reaches it as a snapshot of the board's epoch
        if since is None or epoch != cur.epoch or since > cur.version:
            client.offer(cur, "snapshot", live=False)
            return
        hist = self.history.get(client.board)
        base = hist.get(since) if hist is not None else None
        if since == cur.version and base is not None:
            client.last = base
        elif base is not None:
            client.last = base
            client.offer(cur, "update", live=False)
        else:
            client.offer(cur, "snapshot", live=False)

    def detach(self, client: Client) -> None:
        client.close()
        with contextlib.suppress(KeyError):
            self.clients[client.board].remove(client)
            CLIENTS.labels(client.transport).dec()
