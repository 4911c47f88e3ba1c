"""Kafka side of ingest: durable publication of accepted actions, best-effort audit events.

An action is published with acks=all and awaited (bounded); only then does the API answer 2xx.
Audit events go through a bounded queue drained by one task, so a slow or absent broker can never
hold up (or grow the memory of) the request path; what the queue cannot hold is counted and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from prometheus_client import Counter

from leaderboard.common.events import ActionCompleted, Event

log = logging.getLogger(__name__)
AUDIT_DROPPED = Counter("ingest_audit_dropped_total", "Audit events dropped because the queue was full")


class PublishFailed(Exception):
    """Kafka did not acknowledge in time: nothing may be reported as accepted."""


class Publisher:
    def __init__(
        self, producer: AIOKafkaProducer, actions_topic: str, audit_topic: str, timeout_s: float
    ) -> None:
        self.producer = producer
        self.actions_topic, self.audit_topic = actions_topic, audit_topic
        self.timeout_s = timeout_s
        self._audit: asyncio.Queue[Event] = asyncio.Queue(maxsize=10_000)
        self._task: asyncio.Task[None] | None = None

    async def publish_actions(self, events: list[ActionCompleted]) -> None:
        await self.publish_records([(str(e.user_id).encode(), e.to_bytes()) for e in events])

    async def publish_records(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Publish encoded actions, (key, value) pairs keyed by userId, and wait for every ack.

        Bounded by ``asyncio.timeout`` in the request's own task rather than ``wait_for`` (a task per
        publish, issue 12); one record's ack is awaited as it is, several through ``gather``."""
        send, topic = self.producer.send, self.actions_topic
        try:
            async with asyncio.timeout(self.timeout_s):
                futures = [await send(topic, value, key=key) for key, value in records]
                if len(futures) == 1:
                    await futures[0]
                else:
                    await asyncio.gather(*futures)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise PublishFailed(str(exc) or type(exc).__name__) from exc

    def audit(self, event: Event) -> None:
        try:
            self._audit.put_nowait(event)
        except asyncio.QueueFull:
            AUDIT_DROPPED.inc()

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="audit-drain")

    async def stop(self) -> None:
        if self._task:
            # Give queued audit events a moment to leave, then stop.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._audit.join(), 2)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _drain(self) -> None:
        while True:
            event = await self._audit.get()
            try:
                key = getattr(event, "user_id", None) or getattr(event, "client_ip", None) or "audit"
                await asyncio.wait_for(
                    self.producer.send_and_wait(self.audit_topic, event.to_bytes(), key=str(key).encode()),
                    self.timeout_s,
                )
            except Exception as exc:
                AUDIT_DROPPED.inc()
                log.warning("audit event not published: %s", exc)
            finally:
                self._audit.task_done()
