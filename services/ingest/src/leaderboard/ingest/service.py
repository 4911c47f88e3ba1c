"""The write use-cases: start an action, complete it, accept service events. Orchestrates the
domain rules with the ticket store and the publisher; knows nothing of HTTP beyond ApiError."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from prometheus_client import Counter, Histogram
from redis.exceptions import RedisError

from leaderboard.common.auth import Principal
from leaderboard.common.catalog import Catalog
from leaderboard.common.events import ActionCompleted, from_epoch_ms, iso_ms, now_ms
from leaderboard.common.web import ApiError
from leaderboard.ingest import domain
from leaderboard.ingest.adapters.applied import AppliedWaiter
from leaderboard.ingest.adapters.publisher import Publisher, PublishFailed
from leaderboard.ingest.adapters.tickets import TicketStore
from leaderboard.ingest.settings import IngestSettings

log = logging.getLogger(__name__)
ACCEPTED = Counter("ingest_events_accepted_total", "Events acknowledged by Kafka", ["source"])
DUPLICATES = Counter("ingest_duplicates_total", "Service events refused as already accepted")
PUBLISH_SECONDS = Histogram("ingest_publish_seconds", "Time for Kafka to acknowledge a publish")


@dataclass
class Completed:
    user_id: str
    action_id: UUID
    event_id: UUID
    new_score: int | None


class IngestService:
    def __init__(
        self,
        settings: IngestSettings,
        catalog: Catalog,
        tickets: TicketStore,
        publisher: Publisher,
        applied: AppliedWaiter,
    ) -> None:
        self.settings, self.catalog, self.tickets, self.publisher, self.applied = (
            settings,
            catalog,
            tickets,
            publisher,
            applied,
        )
        self.caps = {name: spec.per_hour for name, spec in catalog.actions.items()}

    def _unavailable(self, why: str) -> ApiError:
        return ApiError(
            503,
            "unavailable",
            f"event log unavailable ({why}); nothing was recorded, retry later",
            {"Retry-After": str(self.settings.retry_after_s)},
        )

    async def start_action(self, who: Principal, action_type: str) -> domain.ActionStarted:
        spec = domain.spec_for(self.catalog, action_type)
        if spec.per_hour:
            # Early, friendly refusal; the authoritative check is atomic with the completion.
            count, wait_ms = await self.tickets.cap_usage(
                who.sub, action_type, int(now_ms().timestamp() * 1000)
            )
            if count >= spec.per_hour:
                raise domain.claim_refusal("cap", str(wait_ms))
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
        return domain.ActionStarted(
            action_id=action_id,
            action_type=action_type,
            points=spec.points,
            expires_at=iso_ms(from_epoch_ms(issued.expires_ms)),
            not_before=iso_ms(from_epoch_ms(issued.not_before_ms)),
        )

    async def complete_action(
        self, who: Principal, body: domain.CompleteAction, request_id: str, wait: bool
    ) -> Completed:
        occurred = domain.parse_client_time(body.timestamp, "timestamp")
        event_id = uuid.uuid4()
        claim = await self.tickets.claim(
            body.action_id, who.sub, event_id, self.settings.claim_lease_s * 1000, self.caps
        )
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
        except ApiError:
            await self.tickets.release(body.action_id, who.sub, claim.action_type, event_id)
            raise
        event = ActionCompleted(
            event_id=event_id,
            action_id=body.action_id,
            user_id=UUID(who.sub),
            username=who.name or domain.default_username(who.sub),
            action_type=claim.action_type,
            points=claim.points,
            occurred_at=occurred,
            accepted_at=now_ms(),
            source="player",
            request_id=request_id,
        )
        waiter = self.applied.expect(str(body.action_id)) if wait else None
        try:
            with PUBLISH_SECONDS.time():
                await self.publisher.publish_actions([event])
        except PublishFailed as exc:
            if waiter is not None:
                self.applied.forget(str(body.action_id))
            await self.tickets.release(body.action_id, who.sub, claim.action_type, event_id)
            raise self._unavailable(str(exc)) from exc
        ACCEPTED.labels("player").inc()
        try:
            await self.tickets.confirm(body.action_id, event_id, self.settings.used_ticket_retention_s * 1000)
        except RedisError as exc:
            # The event is in the log, so a 503 now would be a lie. The ticket stays pending (409)
            # until its lease lapses; a later second event for it is deduped by the scorer.
            log.warning("action %s accepted but its ticket not marked used: %s", body.action_id, exc)
        score = None
        if waiter is not None:
            score = await self.applied.wait(waiter, self.settings.wait_timeout_s)
            self.applied.forget(str(body.action_id))
        return Completed(who.sub, body.action_id, event_id, score)

    async def submit_events(
        self, who: Principal, batch: domain.EventBatch, request_id: str
    ) -> domain.BatchAccepted:
        checked, repeats = domain.check_batch(
            batch, self.catalog, now_ms(), self.settings.timestamp_skew_s, self.settings.max_batch_events
        )
        owner = f"pending:{request_id}:{uuid.uuid4().hex[:8]}"
        ids = [c.event.action_id for c in checked]
        mine = await self.tickets.claim_events(ids, owner, self.settings.claim_lease_s * 1000)
        fresh = [c for i, c in enumerate(checked) if i in mine]
        accepted_at = now_ms()
        events = [
            self._service_event(c.event, c.points, c.occurred_at, accepted_at, request_id) for c in fresh
        ]
        fresh_ids = [c.event.action_id for c in fresh]
        if events:
            try:
                with PUBLISH_SECONDS.time():
                    await self.publisher.publish_actions(events)
            except PublishFailed as exc:
                await self.tickets.settle_events(fresh_ids, owner, accepted=False, keep_ms=0)
                raise self._unavailable(str(exc)) from exc
            try:
                await self.tickets.settle_events(
                    fresh_ids, owner, accepted=True, keep_ms=self.settings.dedupe_window_s * 1000
                )
            except RedisError as exc:
                # Accepted all the same (the events are in the log); the markers lapse with their lease.
                log.warning("batch %s accepted but its dedupe markers not settled: %s", request_id, exc)
        ACCEPTED.labels("service").inc(len(events))
        duplicates = repeats + len(checked) - len(fresh)
        DUPLICATES.inc(duplicates)
        return domain.BatchAccepted(accepted=len(events), duplicates=duplicates)

    def _service_event(
        self, e: domain.ServiceEvent, points: int, occurred: datetime, accepted_at: datetime, request_id: str
    ) -> ActionCompleted:
        return ActionCompleted(
            event_id=uuid.uuid4(),
            action_id=e.action_id,
            user_id=e.user_id,
            username=e.username or domain.default_username(str(e.user_id)),
            action_type=e.action_type,
            points=points,
            occurred_at=occurred,
            accepted_at=accepted_at,
            source="service",
            request_id=request_id,
        )

    async def submit_legacy(
        self, who: Principal, body: domain.LegacyScore, request_id: str
    ) -> domain.LegacyAccepted:
        """Seed 004's POST /score: one service event whose points are ``increment``."""
        action_type = body.action_type or self.settings.legacy_action_type
        spec = domain.spec_for(self.catalog, action_type)
        if body.increment > spec.max_points:
            raise ApiError(
                422, "invalid", f"field 'increment' must lie in 1..{spec.max_points} for '{action_type}'"
            )
        action_id = body.action_id or uuid.uuid4()
        event = {
            "actionId": str(action_id),
            "userId": str(body.user_id),
            "username": body.username,
            "actionType": action_type,
            "occurredAt": iso_ms(now_ms()),
            "points": body.increment,
        }
        batch = domain.EventBatch.model_validate({"events": [event]})
        result = await self.submit_events(who, batch, request_id)
        return domain.LegacyAccepted(
            user_id=body.user_id,
            action_id=action_id,
            accepted=result.accepted,
            duplicates=result.duplicates,
        )
