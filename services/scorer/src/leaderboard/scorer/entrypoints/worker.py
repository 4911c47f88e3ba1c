"""The scorer's Faust worker: consumes ``leaderboard.actions.v1`` and hands batches to the
:class:`~leaderboard.scorer.projector.Projector`. Run it with ``leaderboard scorer`` (``main.run``).

Replicas form one consumer group; actions are keyed by user, so one user's events stay on one
partition and in order. The agent is deliberately thin: it takes batches (``stream.take_events``)
and hands them to the projector.

Delivery is at-least-once into idempotent sinks (Faust's exactly_once has open bugs). Faust acks a
``take`` batch in a ``finally`` after the body, so an exception escaping the body would let its
offsets be committed unapplied: the body retries transient failures itself and, past that, ends
the process at once (``os._exit``) so the batch is redelivered to whoever takes the partition.
A record that Postgres refuses because of its own data does not fail the batch: the projector
isolates it to the DLQ, so one bad record cannot stop scoring.

Start-up (:class:`Stores`, a ``mode.Service`` started with the app): ``bootstrap`` opens the stores,
then the boards are rebuilt if Redis lost them, a version a crash kept from going out is announced,
each windowed board's current period is opened, and pending quarantine audit events are sent; only
then does the agent take batches and /readyz say ok. While the worker runs, :func:`roll_over_forever`
opens each windowed board's new period at its boundary (no restart, no event needed).
Faust's partition signals keep ``assignment`` (the ``scorer_assigned_partitions`` and
``scorer_consumer_lag`` gauges) to the partitions this worker holds. The web routes are
``entrypoints.web``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any, ClassVar, cast

import mode

from leaderboard.common.heap import freeze_startup_heap
from leaderboard.common.kafka import tune_faust_fetch_wait
from leaderboard.common.topics import Topics
from leaderboard.scorer.adapters.lease import Lease
from leaderboard.scorer.assignment import TopicPartition
from leaderboard.scorer.bootstrap import Ports, bootstrap
from leaderboard.scorer.domain import BatchPacer, Record
from leaderboard.scorer.entrypoints import web
from leaderboard.scorer.entrypoints.runtime import Runtime, ScorerApp
from leaderboard.scorer.health import Progress
from leaderboard.scorer.projector import Projector
from leaderboard.scorer.settings import ScorerSettings

log = logging.getLogger(__name__)
RETRY_FOR_S = 30.0


def faust_options(settings: ScorerSettings) -> dict[str, Any]:
    """The worker's Faust configuration (group timings scale with the session timeout)."""
    return {
        "broker": f"kafka://{settings.kafka_bootstrap}",
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": max(0.5, settings.session_timeout_s / 10),
        "broker_rebalance_timeout": max(10.0, settings.session_timeout_s * 2),
        "broker_commit_interval": settings.commit_interval_s,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "stream_buffer_maxsize": max(4096, settings.batch_size * 2),
        "topic_allow_declare": False,
        "topic_disable_leader": True,
        "web_enabled": True,
        "web_bind": settings.scorer_web_host,
        "web_host": settings.scorer_web_host,
        "web_port": settings.scorer_web_port,
        "datadir": settings.scorer_datadir,
    }


def build_app(settings: ScorerSettings) -> ScorerApp:
    tune_faust_fetch_wait(settings.scorer_fetch_max_wait_ms)
    runtime = Runtime(settings, Progress(settings.stall_after_s))
    app = ScorerApp(runtime, settings.scorer_group, **faust_options(settings))
    actions = app.topic(
        Topics(settings.topic_prefix).actions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    app.service(cast(type[Stores], type("Stores", (Stores,), {"runtime": runtime})))
    app.on_partitions_assigned.connect(on_partitions_assigned)
    app.on_partitions_revoked.connect(on_partitions_revoked)

    @app.agent(actions)
    async def project(stream: Any) -> None:
        await consume(app, stream)

    web.install(app)
    return app


class Stores(mode.Service):
    """The stores and the projector, opened and checked when the worker starts, closed when it stops.
    ``runtime`` is bound per app by :func:`build_app` (Faust instantiates services itself)."""

    runtime: ClassVar[Runtime]

    async def on_start(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        ports = await self._stack.enter_async_context(bootstrap(self.runtime.settings))
        await start_up(ports.projector)
        settings = self.runtime.settings
        self._rollover = asyncio.create_task(
            roll_over_forever(ports.projector, settings.rollover_check_s), name="board-rollover"
        )
        self._lease = Lease(ports.redis, settings)
        await self._lease.take()
        self._leasing = asyncio.create_task(self._lease.keep(), name="scorer-lease")
        self.runtime.mark_ready(ports)
        freeze_startup_heap()
        log.info("scorer ready: group %s, batches of up to %d", settings.scorer_group, settings.batch_size)

    async def on_stop(self) -> None:
        for name in ("_rollover", "_leasing"):
            task = getattr(self, name, None)  # absent when start-up failed
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        lease = getattr(self, "_lease", None)
        if lease is not None:
            with contextlib.suppress(Exception):  # a Redis away at stop: the lease expires by itself
                await lease.release()
        stack = getattr(self, "_stack", None)
        if stack is not None:
            await stack.aclose()


async def on_partitions_assigned(app: Any, /, *args: Any, **kwargs: Any) -> None:
    """Faust's signal after a rebalance, ``(app, assigned)``: the worker's whole new assignment."""
    assigned: set[TopicPartition] = args[0]
    runtime = cast(ScorerApp, app).runtime
    runtime.assignment.assigned(assigned)
    log.info("holding partitions %s", sorted(runtime.assignment.held))


async def on_partitions_revoked(app: Any, /, *args: Any, **kwargs: Any) -> None:
    """Faust's signal, ``(app, revoked)``, once the agents have finished with the partitions being
    taken away (so no batch of theirs reports a lag afterwards)."""
    revoked: set[TopicPartition] = args[0]
    cast(ScorerApp, app).runtime.assignment.revoked(revoked)


async def start_up(projector: Projector) -> None:
    """What a crash or a flushed Redis may have left undone, before the first batch."""
    await projector.ensure_board()
    await projector.announce_unsent()
    await projector.roll_over()  # each windowed board's current period, open and announced
    await projector.audit_quarantine()  # audit events a crash kept from going out


async def roll_over_forever(projector: Projector, every_s: float) -> None:
    """Open each windowed board's new period as soon as the scorer's clock passes its boundary. A
    failure (a store away for a moment) is logged and tried again at the next tick."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await projector.roll_over()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("opening a new board period failed; trying again", exc_info=True)


async def consume(app: ScorerApp, stream: Any) -> None:
    """The agent's body: batches from the stream, applied to completion, lag observed after each."""
    rt = app.runtime
    await rt.started.wait()
    ports = cast(Ports, rt.ports)
    settings = rt.settings
    pacer = BatchPacer(settings.batch_within_s, settings.batch_fill_target, settings.batch_max_wait_s)
    loop = asyncio.get_running_loop()
    async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
        pacer.taken(len(events), loop.time())
        records = [
            Record(e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value)
            for e in events
        ]
        await _process_or_die(ports.projector, records, rt.progress)
        _observe_lag(app, events)
        # Records keep arriving into take_events' buffer meanwhile; the batch is applied, so a
        # cancellation here (a graceful stop) leaves nothing half done.
        if (rest := pacer.rest(loop.time())) > 0:
            await asyncio.sleep(rest)


def _observe_lag(app: ScorerApp, events: Any) -> None:
    """Consumer lag per partition after a batch: high watermark minus the next offset to read."""
    last: dict[Any, int] = {}
    for e in events:
        last[e.message.tp] = max(last.get(e.message.tp, -1), e.message.offset)
    for tp, offset in last.items():
        with contextlib.suppress(Exception):  # best effort: the highwater may be unknown yet
            high = app.consumer.highwater(tp)
            if high is not None:
                app.runtime.assignment.observe_lag(tp.partition, high - offset - 1)


async def _process_or_die(projector: Projector, records: list[Record], progress: Progress) -> None:
    """Apply a batch to completion. Cancellation (a graceful stop) waits for the batch first:
    ``take_events`` acks the batch when the agent leaves its body, so a half-applied batch must
    never be abandoned there."""
    task = asyncio.ensure_future(_retry_or_die(projector, records, progress))
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _retry_or_die(projector: Projector, records: list[Record], progress: Progress) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RETRY_FOR_S
    delay = 0.1
    progress.started(loop.time())
    while True:
        try:
            await projector.process(records)
            progress.done()
            return
        except Exception as exc:
            progress.failed(loop.time(), exc)
            if loop.time() > deadline:
                log.exception("batch failed for %.0fs; exiting so that it is redelivered", RETRY_FOR_S)
                logging.shutdown()
                os._exit(75)
            log.warning("batch failed; retrying in %.1fs", delay, exc_info=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)
