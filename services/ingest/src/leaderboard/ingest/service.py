"""The write use-cases: start an action, complete it, accept service events. Orchestrates the
domain rules with the ticket store and the publisher; knows nothing of HTTP: refusals are the
exceptions of ``leaderboard.ingest.errors``, results are the dataclasses below."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from prometheus_client import Counter, Histogram
from redis.exceptions import RedisError

from leaderboard.common.auth import Principal
from leaderboard.common.catalog import Catalog
from leaderboard.common.events import (
    ActionCompleted,
    action_completed_bytes,
    from_epoch_ms,
    iso_ms,
    new_event_ids,
    now_ms,
)
from leaderboard.ingest import domain
from leaderboard.ingest.adapters.applied import AppliedWaiter
from leaderboard.ingest.adapters.publisher import Publisher, PublishFailed
from leaderboard.ingest.adapters.ratelimit import Limit, RateLimiter
from leaderboard.ingest.adapters.tickets import TicketStore
from leaderboard.ingest.errors import SLOW_DOWN, CapReached, DomainError, LogUnavailable, RateLimited
from leaderboard.ingest.settings import IngestSettings

log = logging.getLogger(__name__)
ACCEPTED = Counter("ingest_events_accepted_total", "Events acknowledged by Kafka", ["source"])
DUPLICATES = Counter("ingest_duplicates_total", "Service events refused as already accepted")
PUBLISH_SECONDS = Histogram("ingest_publish_seconds", "Time for Kafka to acknowledge a publish")


@dataclass(frozen=True)
class Ticket:
    """A started action: the single-use ticket a player completes later."""

    action_id: UUID
    action_type: str
    points: int
    expires_at: datetime
    not_before: datetime


@dataclass
class Completed:
    user_id: str
    action_id: UUID
    event_id: UUID
    new_score: int | None
    limit_headers: dict[str, str] = field(default_factory=dict)  # when charged to ``limits``


@dataclass(frozen=True)
class BatchResult:
    accepted: int
    duplicates: int


class IngestService:
    def __init__(
        self,
        settings: IngestSettings,
        catalog: Catalog,
        tickets: TicketStore,
        publisher: Publisher,
        applied: AppliedWaiter,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings, self.catalog, self.tickets, self.publisher, self.applied = (
            settings,
            catalog,
            tickets,
            publisher,
            applied,
        )
        self.limiter = limiter
        self.caps = {name: spec.per_hour for name, spec in catalog.actions.items()}

    async def start_action(self, who: Principal, action_type: str) -> Ticket:
        spec = domain.spec_for(self.catalog, action_type)
        if spec.per_hour:
            # Early, friendly refusal; the authoritative check is atomic with the completion.
            count, wait_ms = await self.tickets.cap_usage(
                who.sub, action_type, int(now_ms().timestamp() * 1000)
            )
            if count >= spec.per_hour:
                raise CapReached(max(1, -(-wait_ms // 1000)))
        action_id = uuid.uuid4()
        issued = await self.tickets.issue(
            action_id,
            who.sub,
            action_type,
            spec.points,
            min_ms=int(spec.min_seconds * 1000),
            ttl_ms=spec.ttl_seconds * 1000,
            # An unused ticket is kept only a while past its expiry (to answer 410 rather than 404):
            # tickets a player starts and never completes must not pile up in Redis for a day.
            keep_ms=self.settings.expired_ticket_retention_s * 1000,
        )
        return Ticket(
            action_id=action_id,
            action_type=action_type,
            points=spec.points,
            expires_at=from_epoch_ms(issued.expires_ms),
            not_before=from_epoch_ms(issued.not_before_ms),
        )

    async def complete_action(
        self,
        who: Principal,
        action_id: UUID,
        timestamp: int | str,
        request_id: str,
        wait: bool,
        limits: list[Limit] | None = None,
    ) -> Completed:
        """Claim the ticket, check the client's time against it, publish; release the ticket on failure.

        With ``limits`` (the caller not yet charged to its rate limits), they are charged first, in the
        claim's own Redis round trip (:class:`RateLimited` when one is spent, before any other refusal,
        as when the limits are charged before the call); the result carries their RateLimit headers.
        """
        try:
            occurred = domain.parse_client_time(timestamp, "timestamp")
        except DomainError:
            if limits:
                await self._charge(limits)
            raise
        event_id = uuid.uuid4()
        claim = await self.tickets.claim(
            action_id, who.sub, event_id, self.settings.claim_lease_s * 1000, self.caps, limits
        )
        headers = claim.rate.headers() if claim.rate is not None else {}
        if claim.rate is not None and not claim.rate.allowed:
            raise RateLimited(SLOW_DOWN, headers)
        if claim.outcome != "ok":
            raise domain.claim_refusal(claim.outcome, claim.detail)
        try:
            now = from_epoch_ms(claim.now_ms)
            domain.check_window(
                occurred,
                now,
                self.settings.timestamp_skew_s,
                "timestamp",
                not_before=from_epoch_ms(claim.issued_ms),
            )
        except DomainError:
            await self.tickets.release(action_id, who.sub, claim.action_type, event_id)
            raise
        event = ActionCompleted(
            event_id=event_id,
            action_id=action_id,
            user_id=UUID(who.sub),
            username=who.name or domain.default_username(who.sub),
            action_type=claim.action_type,
            points=claim.points,
            occurred_at=occurred,
            accepted_at=now_ms(),
            source="player",
            request_id=request_id,
        )
        score = await self._publish_claimed(event, wait)
        return Completed(who.sub, action_id, event_id, score, headers)

    async def _charge(self, limits: list[Limit]) -> None:
        """Charge ``limits`` alone: :class:`RateLimited` when one is spent."""
        if self.limiter is None:
            raise RuntimeError("rate limits given to a service built without a limiter")
        decision = await self.limiter.check(limits)
        if not decision.allowed:
            raise RateLimited(SLOW_DOWN, decision.headers())

    async def _publish_claimed(self, event: ActionCompleted, wait: bool) -> int | None:
        """Publish a claimed ticket's event and mark the ticket used; the new score when ``wait``."""
        action_id, user_id = event.action_id, str(event.user_id)
        waiter = self.applied.expect(str(action_id)) if wait else None
        try:
            with PUBLISH_SECONDS.time():
                await self.publisher.publish_actions([event])
        except PublishFailed as exc:
            if waiter is not None:
                self.applied.forget(str(action_id))
            await self.tickets.release(action_id, user_id, event.action_type, event.event_id)
            raise LogUnavailable(str(exc)) from exc
        ACCEPTED.labels("player").inc()
        try:
            await self.tickets.confirm(
                action_id, event.event_id, self.settings.used_ticket_retention_s * 1000
            )
        except RedisError as exc:
            # The event is in the log, so a 503 now would be a lie. The ticket stays pending (409)
            # until its lease lapses; a later second event for it is deduped by the scorer.
            log.warning("action %s accepted but its ticket not marked used: %s", action_id, exc)
        if waiter is None:
            return None
        score = await self.applied.wait(waiter, self.settings.wait_timeout_s)
        self.applied.forget(str(action_id))
        return score

    async def submit_events(
        self, who: Principal, events: Sequence[domain.Reported], request_id: str
    ) -> BatchResult:
        """Publish a service batch atomically; actionIds already accepted count as duplicates."""
        checked, repeats = domain.check_batch(
            events, self.catalog, now_ms(), self.settings.timestamp_skew_s, self.settings.max_batch_events
        )
        owner = f"pending:{request_id}:{uuid.uuid4().hex[:8]}"
        ids = [str(c.event.action_id) for c in checked]
        mine = await self.tickets.claim_events(ids, owner, self.settings.claim_lease_s * 1000)
        fresh = [i for i in range(len(checked)) if i in mine]
        records = self._service_records([checked[i] for i in fresh], [ids[i] for i in fresh], request_id)
        if records:
            await self._publish_fresh(records, [ids[i] for i in fresh], owner, request_id)
        ACCEPTED.labels("service").inc(len(records))
        duplicates = repeats + len(checked) - len(fresh)
        DUPLICATES.inc(duplicates)
        return BatchResult(accepted=len(records), duplicates=duplicates)

    async def _publish_fresh(
        self, records: list[tuple[bytes, bytes]], ids: list[str], owner: str, request_id: str
    ) -> None:
        """Publish what this request claimed, then settle its dedupe markers either way."""
        try:
            with PUBLISH_SECONDS.time():
                await self.publisher.publish_records(records)
        except PublishFailed as exc:
            await self.tickets.settle_events(ids, owner, accepted=False, keep_ms=0)
            raise LogUnavailable(str(exc)) from exc
        try:
            await self.tickets.settle_events(
                ids, owner, accepted=True, keep_ms=self.settings.dedupe_window_s * 1000
            )
        except RedisError as exc:
            # Accepted all the same (the events are in the log); the markers lapse with their lease.
            log.warning("batch %s accepted but its dedupe markers not settled: %s", request_id, exc)

    @staticmethod
    def _service_records(
        fresh: list[domain.CheckedEvent], action_ids: list[str], request_id: str
    ) -> list[tuple[bytes, bytes]]:
        """The (key, value) records of a batch's fresh events: ``ActionCompleted`` encoded straight
        from the checked fields (:func:`~leaderboard.common.events.action_completed_bytes`).

        Safe without building the model: every field was validated already with the model's own types
        or rules. The request schema (``ServiceEvent``, or ``LegacyScore`` for seed 004's /score) holds
        the ids as UUIDs, ``username`` as ``Username``, ``actionType`` as ``ActionType``, ``points``
        within 1..MAX_POINTS and ``metadata`` as ``Metadata``; :func:`domain.check_batch` found the type
        in the catalog (whose names are ``ActionType`` and whose points lie in 1..MAX_POINTS), bounded
        the points by the type's ``max_points`` and parsed the time to UTC milliseconds; the default
        username is ``player-`` and 8 hex digits; the request id is a sane one (or our own hex).
        """
        accepted_at = iso_ms(now_ms())
        event_ids = new_event_ids(len(fresh))
        records: list[tuple[bytes, bytes]] = []
        last_time: datetime | None = None
        occurred = ""
        for c, action_id, event_id in zip(fresh, action_ids, event_ids, strict=True):
            e = c.event
            user_id = str(e.user_id)
            if c.occurred_at != last_time:  # a batch's events often share their time
                last_time, occurred = c.occurred_at, iso_ms(c.occurred_at)
            value = action_completed_bytes(
                event_id=event_id,
                action_id=action_id,
                user_id=user_id,
                username=e.username or domain.default_username(user_id),
                action_type=e.action_type,
                points=c.points,
                occurred_at=occurred,
                accepted_at=accepted_at,
                source="service",
                request_id=request_id,
                metadata=e.metadata,
            )
            records.append((user_id.encode(), value))
        return records

    async def submit_legacy(
        self,
        who: Principal,
        *,
        user_id: UUID,
        increment: int,
        action_id: UUID | None,
        action_type: str | None,
        username: str | None,
        request_id: str,
    ) -> tuple[UUID, BatchResult]:
        """Seed 004's POST /score: one service event whose points are ``increment``; answers the
        actionId used (a fresh one when none was given) and the batch's result."""
        action_type = action_type or self.settings.legacy_action_type
        spec = domain.spec_for(self.catalog, action_type)
        domain.check_increment(spec, action_type, increment)
        action_id = action_id or uuid.uuid4()
        event = domain.ReportedAction(
            action_id=action_id,
            user_id=user_id,
            username=username,
            action_type=action_type,
            occurred_at=iso_ms(now_ms()),
            points=increment,
        )
        return action_id, await self.submit_events(who, [event], request_id)
