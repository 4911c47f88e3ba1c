"""Scorer: a faust-streaming app that projects ``leaderboard.actions.v1`` into Postgres and Redis.

Run it with ``leaderboard scorer``. Replicas form one consumer group; actions are keyed by user, so
one user's events stay on one partition and in order. The agent is deliberately thin: it takes
batches (``stream.take_events``) and hands them to :class:`Projector`.

Delivery is at-least-once into idempotent sinks (Faust's exactly_once has open bugs). Faust acks a
``take`` batch in a ``finally`` after the body, so an exception escaping the body would let its
offsets be committed unapplied: the body retries transient failures itself and, past that, ends
the process at once (``os._exit``) so the batch is redelivered to whoever takes the partition.
A record that Postgres refuses because of its own data does not fail the batch: the projector
isolates it to the DLQ, so one bad record cannot stop scoring.

Web (Faust's server, ``--web-port``): /healthz, /readyz (503 with a reason while starting or while
a batch fails or hangs, see ``health``), /metrics (Prometheus), and
``GET /api/v1/admin/quarantine?limit=&userId=`` (admin JWT) listing actions held by velocity caps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import uuid
from typing import Any

import faust
import mode
from prometheus_client import Gauge, generate_latest

from leaderboard.common.auth import AuthError, TokenVerifier
from leaderboard.common.events import iso_ms
from leaderboard.common.kafka import producer, tune_faust_fetch_wait
from leaderboard.common.params import parse_count
from leaderboard.common.postgres import postgres_pool
from leaderboard.common.redis import redis_client
from leaderboard.common.topics import Topics
from leaderboard.scorer.adapters import projection
from leaderboard.scorer.adapters.migrate import migrate
from leaderboard.scorer.domain import Record
from leaderboard.scorer.health import Progress
from leaderboard.scorer.projector import Projector
from leaderboard.scorer.settings import ScorerSettings

log = logging.getLogger(__name__)
RETRY_FOR_S = 30.0
LAG = Gauge("scorer_consumer_lag", "Records behind the high watermark (best effort)", ["partition"])
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # the rule of leaderboard.common.web


def build_app(settings: ScorerSettings) -> faust.App:
    tune_faust_fetch_wait(settings.kafka_fetch_max_wait_ms)
    topics = Topics(settings.topic_prefix)
    app = faust.App(
        settings.scorer_group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 10),
        broker_rebalance_timeout=max(10.0, settings.session_timeout_s * 2),
        broker_commit_interval=settings.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        stream_buffer_maxsize=max(4096, settings.batch_size * 2),
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=True,
        web_bind=settings.scorer_web_host,
        web_host=settings.scorer_web_host,
        web_port=settings.scorer_web_port,
        datadir=os.environ.get("LEADERBOARD_SCORER_DATADIR", ".leaderboard/scorer-data"),
    )
    actions = app.topic(
        topics.actions, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    ready = asyncio.Event()
    holder: dict[str, Projector] = {}
    progress = Progress(settings.stall_after_s)

    @app.service
    class Resources(mode.Service):
        """Postgres pool, Redis client and Kafka producer, opened and closed with the worker."""

        async def on_start(self) -> None:
            self._stack = contextlib.AsyncExitStack()
            pool = await self._stack.enter_async_context(postgres_pool(settings, max_size=4))
            async with pool.acquire() as conn:
                await migrate(conn)
            redis = await self._stack.enter_async_context(redis_client(settings))
            kafka = await self._stack.enter_async_context(producer(settings))
            projector = Projector(settings, pool, redis, kafka)
            await projector.ensure_board()
            await projector.announce_unsent()
            await projector.audit_quarantine()  # audit events a crash kept from going out
            holder["projector"] = projector
            ready.set()
            log.info(
                "scorer ready: group %s, batches of up to %d", settings.scorer_group, settings.batch_size
            )

        async def on_stop(self) -> None:
            await self._stack.aclose()

    @app.agent(actions)
    async def project(stream: Any) -> None:
        await ready.wait()
        projector = holder["projector"]
        async for events in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            records = [
                Record(e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value)
                for e in events
            ]
            await _process_or_die(projector, records, progress)
            _observe_lag(app, events)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        if not ready.is_set():
            return web.json({"status": "starting", "reason": "connecting to the stores"}, status=503)
        stalled = progress.stalled(asyncio.get_running_loop().time())
        if stalled:
            return web.json({"status": "stalled", "reason": stalled}, status=503)
        return web.json({"status": "ok"})

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        progress.stalled(asyncio.get_running_loop().time())  # a hung batch shows without a probe
        # aiohttp refuses a charset inside content_type; the exposition format is UTF-8 anyway.
        return web.bytes(generate_latest(), content_type="text/plain; version=0.0.4")

    verifier: list[TokenVerifier] = []

    @app.page("/api/v1/admin/quarantine")
    async def quarantine(web: Any, request: Any) -> Any:
        given = request.headers.get("X-Request-ID", "")
        headers = {"X-Request-ID": given if _REQUEST_ID.match(given) else uuid.uuid4().hex}
        try:
            _require_admin(request, verifier, settings, ready.is_set())
            limit, user_id = _quarantine_query(request)
        except Refused as refused:
            body = {"status": "error", "error": refused.message, "code": refused.code}
            return web.json(body, status=refused.status, headers=headers)
        async with holder["projector"].pool.acquire() as conn:
            rows = await projection.list_quarantine(conn, limit=limit, user_id=user_id)
        return web.json({"quarantined": [_quarantine_entry(r) for r in rows]}, headers=headers)

    return app


class Refused(Exception):
    """An admin request refused with ``status``, in the error shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _require_admin(
    request: Any, verifier: list[TokenVerifier], settings: ScorerSettings, ready: bool
) -> None:
    """Raises :class:`Refused` unless the request bears a valid token of the admin role."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Refused(401, "unauthorized", "a bearer token is required")
    try:
        if not verifier:
            verifier.append(TokenVerifier(settings))
        principal = verifier[0].verify(token.strip())
    except AuthError as exc:
        raise Refused(401, "unauthorized", str(exc)) from None
    except RuntimeError:
        log.exception("no JWT verification key configured")
        raise Refused(503, "unavailable", "token verification is not configured") from None
    if principal.role != "admin":
        raise Refused(403, "forbidden", "the admin role is required")
    if not ready:
        raise Refused(503, "unavailable", "the scorer is starting")


def _quarantine_query(request: Any) -> tuple[int, uuid.UUID | None]:
    """``limit`` (1..1000, default 100) and ``userId`` (a UUID); :class:`Refused` (422) naming the field."""
    try:
        limit = parse_count(request.query.get("limit", "100"), "limit", minimum=1, maximum=1000)
    except ValueError as exc:
        raise Refused(422, "invalid", str(exc)) from None
    user = request.query.get("userId")
    try:
        return limit, uuid.UUID(user) if user else None
    except ValueError:
        raise Refused(422, "invalid", "field 'userId': must be a UUID") from None


def _quarantine_entry(row: dict[str, Any]) -> dict[str, Any]:
    camel = {
        "action_id": "actionId", "event_id": "eventId", "user_id": "userId", "username": "username",
        "action_type": "actionType", "points": "points", "source": "source", "occurred_at": "occurredAt",
        "accepted_at": "acceptedAt", "reason": "reason", "quarantined_at": "quarantinedAt",
        "kafka_partition": "partition", "kafka_offset": "offset", "audited_at": "auditedAt",
    }  # fmt: skip
    out: dict[str, Any] = {}
    for key, value in row.items():
        if hasattr(value, "isoformat"):
            value = iso_ms(value)
        elif isinstance(value, uuid.UUID):
            value = str(value)
        out[camel[key]] = value
    return out


def _observe_lag(app: faust.App, events: Any) -> None:
    """Consumer lag per partition after a batch: high watermark minus the next offset to read."""
    last: dict[Any, int] = {}
    for e in events:
        last[e.message.tp] = max(last.get(e.message.tp, -1), e.message.offset)
    for tp, offset in last.items():
        with contextlib.suppress(Exception):  # best effort: the highwater may be unknown yet
            high = app.consumer.highwater(tp)
            if high is not None:
                LAG.labels(str(tp.partition)).set(max(0, high - offset - 1))


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
