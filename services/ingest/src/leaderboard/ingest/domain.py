"""What ingest decides, with no I/O and no HTTP: time sanity, points, batch rules, and the mapping
from a ticket's state (as the ticket store's script reports it) to a refusal.

Refusals are the exceptions of ``leaderboard.ingest.errors``; the request and response bodies live in
``leaderboard.ingest.entrypoints.schemas``. What a batch rule needs of a reported action is the
:class:`Reported` protocol, which the HTTP body satisfies as it is (no copy of 1,000 events).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from leaderboard.common.catalog import ActionSpec, Catalog
from leaderboard.common.events import utc_ms
from leaderboard.ingest.errors import (
    CapReached,
    DomainError,
    Invalid,
    TicketExpired,
    TicketForbidden,
    TicketNotFound,
    TicketUsed,
    TooFast,
    UnknownActionType,
    UnknownTicketOutcome,
)


class Reported(Protocol):
    """A completed action a game backend reports (one event of a service batch)."""

    @property
    def action_id(self) -> UUID: ...
    @property
    def user_id(self) -> UUID: ...
    @property
    def username(self) -> str | None: ...
    @property
    def action_type(self) -> str: ...
    @property
    def occurred_at(self) -> int | str: ...
    @property
    def points(self) -> int | None: ...
    @property
    def metadata(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class ReportedAction:
    """A :class:`Reported` built by a use case rather than parsed from a request (seed 004's /score)."""

    action_id: UUID
    user_id: UUID
    username: str | None
    action_type: str
    occurred_at: int | str
    points: int | None
    metadata: dict[str, Any] | None = None


def parse_client_time(value: int | str, field: str) -> datetime:
    """Epoch seconds (seed 000) or ISO-8601 with a zone."""
    try:
        if isinstance(value, int):
            return utc_ms(datetime.fromtimestamp(value, UTC))
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError) as exc:
        raise Invalid(field, f"field '{field}' is not epoch seconds or ISO-8601") from exc
    if parsed.tzinfo is None:
        raise Invalid(field, f"field '{field}' needs a time zone (for example Z)")
    return utc_ms(parsed)


def check_window(
    when: datetime, now: datetime, skew_s: int, field: str, not_before: datetime | None = None
) -> None:
    skew = timedelta(seconds=skew_s)
    if when > now + skew:
        raise Invalid(field, f"field '{field}' is in the future")
    floor = (not_before - skew) if not_before is not None else now - timedelta(days=7)
    if when < floor:
        raise Invalid(field, f"field '{field}' is too far in the past")


def spec_for(catalog: Catalog, action_type: str) -> ActionSpec:
    spec = catalog.get(action_type)
    if spec is None:
        raise UnknownActionType(action_type)
    return spec


def points_for(spec: ActionSpec, given: int | None) -> int:
    """A service may report points within 1..max_points; otherwise the catalog's points apply."""
    if given is None:
        return spec.points
    if not 1 <= given <= spec.max_points:
        raise ValueError(f"points must lie in 1..{spec.max_points}")
    return given


def check_increment(spec: ActionSpec, action_type: str, increment: int) -> None:
    """Seed 004's ``increment`` is the event's points: within the type's bounds."""
    if increment > spec.max_points:
        raise Invalid("increment", f"field 'increment' must lie in 1..{spec.max_points} for '{action_type}'")


@dataclass(slots=True)  # not frozen: a frozen dataclass costs an object.__setattr__ per field, per event
class CheckedEvent:
    index: int
    event: Reported
    points: int
    occurred_at: datetime


def check_batch(
    events: Sequence[Reported], catalog: Catalog, now: datetime, skew_s: int, limit: int
) -> tuple[list[CheckedEvent], int]:
    """Validate every event against the catalog; the batch is atomic, so any failure refuses it whole.

    Returns the events to publish (first occurrence of each actionId) and how many repeats the
    request itself contained.
    """
    if len(events) > limit:
        raise Invalid("events", f"a batch holds at most {limit} events, got {len(events)}")
    problems: list[str] = []
    checked: list[CheckedEvent] = []
    seen: set[UUID] = set()
    repeats = 0
    times: dict[int | str, datetime] = {}  # a batch's events often share their time: parse it once
    for i, event in enumerate(events):
        spec = catalog.get(event.action_type)
        if spec is None:
            problems.append(f"events[{i}]: unknown action type '{event.action_type}'")
            continue
        try:
            points = points_for(spec, event.points)
            occurred = times.get(event.occurred_at)
            if occurred is None:
                occurred = parse_client_time(event.occurred_at, "occurredAt")
                check_window(occurred, now, skew_s, "occurredAt")
                times[event.occurred_at] = occurred
        except (ValueError, DomainError) as exc:
            problems.append(f"events[{i}]: {exc}")
            continue
        if event.action_id in seen:
            repeats += 1
            continue
        seen.add(event.action_id)
        checked.append(CheckedEvent(i, event, points, occurred))
    if problems:
        indices = ", ".join(p.split(":", 1)[0] for p in problems[:20])
        raise Invalid("events", f"batch refused, invalid events at {indices}: " + "; ".join(problems[:5]))
    return checked, repeats


def _whole_seconds(ms: str) -> int:
    """Milliseconds rounded up to whole seconds, at least 1: never tell a client to retry too early."""
    return max(1, -(-int(ms) // 1000))


def claim_refusal(outcome: str, detail: str) -> DomainError:
    """The refusal for a ticket claim's outcome (other than ``ok``) as the ticket store reports it."""
    if outcome == "not_found":
        return TicketNotFound()
    if outcome == "forbidden":
        return TicketForbidden()
    if outcome == "used":
        return TicketUsed(detail or None)
    if outcome == "expired":
        return TicketExpired()
    if outcome == "too_fast":
        return TooFast(_whole_seconds(detail))
    if outcome == "cap":
        return CapReached(_whole_seconds(detail))
    return UnknownTicketOutcome(outcome)


def default_username(user_id: str) -> str:
    return f"player-{user_id[:8]}"
