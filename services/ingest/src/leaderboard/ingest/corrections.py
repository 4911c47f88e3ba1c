"""Admins' corrections, each an event on the actions log (the log stays the source of truth; a
correction is never a delete): void one action, void every action of a user (a cheater), restore them,
rename a user. Keyed by the user like the user's actions, so the scorer applies a correction in order
with them; idempotent by ``correctionId``. Answered only after Kafka acknowledged (acks=all), like an
action.
"""

from __future__ import annotations

import asyncio
import uuid
from uuid import UUID

from aiokafka.errors import KafkaError

from leaderboard.common.auth import Principal
from leaderboard.common.events import (
    ActionVoided,
    Correction,
    UserActionsRestored,
    UserActionsVoided,
    UserRenamed,
    correction_record,
    now_ms,
)
from leaderboard.ingest.adapters.publisher import Publisher
from leaderboard.ingest.errors import LogUnavailable


class Corrections:
    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    async def void_action(self, who: Principal, user_id: UUID, action_id: UUID, reason: str) -> Correction:
        return await self._publish(ActionVoided(action_id=action_id, **self._common(who, user_id, reason)))

    async def void_user(self, who: Principal, user_id: UUID, reason: str) -> Correction:
        return await self._publish(UserActionsVoided(**self._common(who, user_id, reason)))

    async def restore(
        self, who: Principal, user_id: UUID, reason: str, action_id: UUID | None = None
    ) -> Correction:
        return await self._publish(
            UserActionsRestored(action_id=action_id, **self._common(who, user_id, reason))
        )

    async def rename(self, who: Principal, user_id: UUID, username: str, reason: str) -> Correction:
        return await self._publish(UserRenamed(username=username, **self._common(who, user_id, reason)))

    @staticmethod
    def _common(who: Principal, user_id: UUID, reason: str) -> dict[str, object]:
        return {
            "correction_id": uuid.uuid4(),
            "user_id": user_id,
            "reason": reason,
            "by": who.sub,
            "at": now_ms(),
        }

    async def _publish(self, correction: Correction) -> Correction:
        key, value = correction_record(correction)
        p = self.publisher
        try:
            await asyncio.wait_for(p.producer.send_and_wait(p.actions_topic, value, key=key), p.timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise LogUnavailable(str(exc) or type(exc).__name__) from exc
        return correction
