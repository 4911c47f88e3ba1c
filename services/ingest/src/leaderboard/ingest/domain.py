"""What ingest decides, with no I/O: request schemas, time sanity, points, batch rules, and the
mapping from a ticket's state to the answer the client gets.

Request schemas are strict where a value reaches the log: numbers are integers only (``"5"``, ``5.0``
and ``true`` are refused, never coerced), and strings use the event types of ``leaderboard.common.events``
(no control characters, no unpaired surrogates, bounded length), so what ingest accepts every store can
hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic.alias_generators import to_camel

from leaderboard.common.catalog import ActionSpec, Catalog
from leaderboard.common.events import MAX_POINTS, ActionType, Username, utc_ms
from leaderboard.common.web import ApiError


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


class ErrorModel(BaseModel):
    """Seed 000's error shape; ``code`` is machine-readable, ``error`` a sentence for people."""

    status: Literal["error"] = "error"
    error: str
    code: str


class TicketUsedError(ErrorModel):
    """409: the ticket was already completed; ``eventId`` names the event that completed it."""

    event_id: str | None = Field(None, alias="eventId")


def parse_client_time(value: int | str, field: str) -> datetime:
    """Epoch seconds (seed 000) or ISO-8601 with a zone."""
    try:
        if isinstance(value, int):
            return utc_ms(datetime.fromtimestamp(value, UTC))
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError) as exc:
        raise ApiError(422, "invalid", f"field '{field}' is not epoch seconds or ISO-8601") from exc
    if parsed.tzinfo is None:
        raise ApiError(422, "invalid", f"field '{field}' needs a time zone (for example Z)")
    return utc_ms(parsed)


def check_window(
    when: datetime, now: datetime, skew_s: int, field: str, not_before: datetime | None = None
) -> None:
    skew = timedelta(seconds=skew_s)
    if when > now + skew:
        raise ApiError(422, "invalid", f"field '{field}' is in the future")
    floor = (not_before - skew) if not_before is not None else now - timedelta(days=7)
    if when < floor:
        raise ApiError(422, "invalid", f"field '{field}' is too far in the past")


def spec_for(catalog: Catalog, action_type: str) -> ActionSpec:
    spec = catalog.get(action_type)
    if spec is None:
        raise ApiError(422, "unknown_action_type", f"unknown action type '{action_type}'")
    return spec


def points_for(spec: ActionSpec, given: int | None) -> int:
    """A service may report points within 1..max_points; otherwise the catalog's points apply."""
    if given is None:
        return spec.points
    if not 1 <= given <= spec.max_points:
        raise ValueError(f"points must lie in 1..{spec.max_points}")
    return given


@dataclass(frozen=True)
class CheckedEvent:
    index: int
    event: ServiceEvent
    points: int
    occurred_at: datetime


def check_batch(
    batch: EventBatch, catalog: Catalog, now: datetime, skew_s: int, limit: int
) -> tuple[list[CheckedEvent], int]:
    """Validate every event against the catalog; the batch is atomic, so any failure refuses it whole.

    Returns the events to publish (first occurrence of each actionId) and how many repeats the
    request itself contained.
    """
    if len(batch.events) > limit:
        raise ApiError(422, "invalid", f"a batch holds at most {limit} events, got {len(batch.events)}")
    problems: list[str] = []
    checked: list[CheckedEvent] = []
    seen: set[UUID] = set()
    repeats = 0
    for i, event in enumerate(batch.events):
        spec = catalog.get(event.action_type)
        if spec is None:
            problems.append(f"events[{i}]: unknown action type '{event.action_type}'")
            continue
        try:
            points = points_for(spec, event.points)
            occurred = parse_client_time(event.occurred_at, "occurredAt")
            check_window(occurred, now, skew_s, "occurredAt")
        except (ValueError, ApiError) as exc:
            problems.append(f"events[{i}]: {exc}")
            continue
        if event.action_id in seen:
            repeats += 1
            continue
        seen.add(event.action_id)
        checked.append(CheckedEvent(i, event, points, occurred))
    if problems:
        indices = ", ".join(p.split(":", 1)[0] for p in problems[:20])
        raise ApiError(
            422, "invalid", f"batch refused, invalid events at {indices}: " + "; ".join(problems[:5])
        )
    return checked, repeats


# Ticket claim outcomes (from the Redis script) -> the client's answer.
def claim_refusal(outcome: str, detail: str) -> ApiError:
    if outcome == "not_found":
        return ApiError(404, "not_found", "unknown actionId: start the action first")
    if outcome == "forbidden":
        return ApiError(403, "forbidden", "this action ticket belongs to another player")
    if outcome == "used":
        return ApiError(409, "ticket_used", "this action was already completed", eventId=detail or None)
    if outcome == "expired":
        return ApiError(410, "ticket_expired", "this action ticket has expired")
    if outcome == "too_fast":
        wait_s = max(1, -(-int(detail) // 1000))
        return ApiError(422, "too_fast", f"completed faster than this action allows; wait {wait_s}s")
    if outcome == "cap":
        retry = max(1, -(-int(detail) // 1000))
        return ApiError(
            429, "cap_reached", "hourly cap for this action type reached", {"Retry-After": str(retry)}
        )
    return ApiError(503, "unavailable", f"ticket store answered {outcome!r}", {"Retry-After": "1"})


def default_username(user_id: str) -> str:
    return f"player-{user_id[:8]}"
