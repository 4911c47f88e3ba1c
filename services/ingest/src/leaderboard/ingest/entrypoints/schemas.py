"""Ingest's HTTP request and response bodies (what OpenAPI publishes).

Request schemas are strict where a value reaches the log: numbers are integers only (``"5"``, ``5.0``
and ``true`` are refused, never coerced), and strings use the event types of ``leaderboard.common.events``
(no control characters, no unpaired surrogates, bounded length), so what ingest accepts every store can
hold. :class:`ServiceEvent` satisfies the domain's ``Reported`` protocol as it is.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic.alias_generators import to_camel

from leaderboard.common.events import MAX_POINTS, ActionType, Metadata, Username
from leaderboard.common.web import ErrorModel


class Strict(BaseModel):
    """A request body: camelCase names only (never also the snake_case ones, so that one field cannot
    arrive under two names), and unknown fields refused with a message naming them."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_alias=True, validate_by_name=False, extra="forbid"
    )


class Reply(BaseModel):
    """A response body, built from Python names and sent with camelCase ones."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="forbid")


# Epoch seconds or ISO-8601; a string longer than any timestamp is refused before it is parsed.
ClientTime = StrictInt | Annotated[StrictStr, Field(max_length=64)]
Points = Annotated[StrictInt, Field(ge=1, le=MAX_POINTS)]


class StartAction(Strict):
    action_type: ActionType


class CompleteAction(Strict):
    action_id: UUID
    timestamp: ClientTime = Field(description="When the action completed: epoch seconds or ISO-8601.")


class ServiceEvent(Strict):
    action_id: UUID
    user_id: UUID
    username: Username | None = None
    action_type: ActionType
    occurred_at: ClientTime
    points: Points | None = None
    metadata: Metadata | None = Field(
        None,
        description="A JSON object of at most 1 KB kept with the board entry it sets (e.g. the map, the "
        "lap, the replay id); returned in reads.",
    )


class EventBatch(Strict):
    events: list[ServiceEvent] = Field(min_length=1)


class LegacyScore(Strict):
    """Seed 004's POST /score body: one completed action worth ``increment`` points."""

    user_id: UUID
    increment: Points
    action_id: UUID | None = None
    action_type: ActionType | None = None
    username: Username | None = None


class ActionStarted(Reply):
    action_id: UUID
    action_type: str
    points: int
    expires_at: str
    not_before: str


class Accepted(Reply):
    status: Literal["success"] = "success"
    user_id: UUID
    action_id: UUID
    event_id: UUID
    new_score: int | None = None


class BatchAccepted(Reply):
    accepted: int
    duplicates: int


class LegacyAccepted(Reply):
    status: Literal["success"] = "success"
    user_id: UUID
    action_id: UUID
    accepted: int
    duplicates: int


class CatalogEntry(Reply):
    action_type: str
    points: int
    max_points: int
    min_seconds: float
    per_hour: int = Field(description="Completions per player per rolling hour; 0 means uncapped")
    ttl_seconds: int


class CatalogListing(Reply):
    actions: list[CatalogEntry]


class TicketUsedError(ErrorModel):
    """409: the ticket was already completed; ``eventId`` names the event that completed it."""

    event_id: str | None = Field(None, alias="eventId")


__all__ = [
    "Accepted",
    "ActionStarted",
    "BatchAccepted",
    "CatalogEntry",
    "CatalogListing",
    "CompleteAction",
    "ErrorModel",
    "EventBatch",
    "LegacyAccepted",
    "LegacyScore",
    "ServiceEvent",
    "StartAction",
    "TicketUsedError",
]
