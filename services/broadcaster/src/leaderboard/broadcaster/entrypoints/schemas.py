"""What the broadcaster's HTTP answers look like (OpenAPI); the handlers answer plain dicts shaped
like these, serialised once, since the frames and pages are built from Redis rows already."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from leaderboard.common.web import ErrorModel


class ScoresEntry(BaseModel):
    """Seed 004's ``/scores`` entries: exactly these four fields."""

    rank: int
    userId: str
    username: str
    score: int


class Entry(ScoresEntry):
    sharedRank: int = Field(
        description="Competition rank: equal scores share it, the next skips (1, 2, 2, 4)."
    )
    metadata: dict[str, Any] | None = Field(
        None, description="The JSON object the game backend sent with the event behind this entry (when any)."
    )


class PeriodFields(BaseModel):
    """Reads of a windowed board name the period they show and when the current one resets."""

    period: str | None = Field(None, description="The period id (windowed boards only).")
    resetsAt: str | None = Field(
        None, description="When the period ends, ISO-8601 UTC (windowed boards only)."
    )


class LeaderboardPage(PeriodFields):
    leaderboard: list[Entry]
    page: int
    limit: int
    sort: Literal["DESC", "ASC"]
    version: int
    epoch: str
    total: int
    at: str | None = Field(
        None, description="With `at=`: the moment the board is shown as of (ISO-8601 UTC)."
    )


class UserRank(Entry, PeriodFields):
    neighbours: list[Entry]


class Ranks(PeriodFields):
    board: str
    epoch: str
    version: int
    total: int
    entries: list[Entry] = Field(description="The listed users who have an entry, in board order.")
    missing: list[str] = Field(description="The listed users without an entry on the board (period).")


class Board(BaseModel):
    id: str
    rule: Literal["sum", "best", "latest"]
    order: Literal["desc", "asc"]
    window: Literal["all", "daily", "weekly", "monthly", "season"]
    types: list[str] | None = Field(description="The action types that feed the board; null: all of them.")
    keep: int = Field(description="How many past periods stay readable from Redis (Postgres keeps all).")
    period: str | None = Field(
        description="The current period ('all' for an all-time board; null between seasons)."
    )
    startsAt: str | None
    resetsAt: str | None = Field(description="When the current period ends (null: never).")


class Boards(BaseModel):
    boards: list[Board]


ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorModel} for c in (401, 404, 422)}


class Voided(BaseModel):
    at: str = Field(description="When the correction that voided the action was decided.")
    reason: str
    by: str = Field(description="The admin's subject.")
    correctionId: str | None


class HistoryAction(BaseModel):
    actionId: str
    actionType: str
    points: int
    acceptedAt: str
    occurredAt: str
    source: str
    metadata: dict[str, Any] | None
    voided: Voided | None = Field(description="Null while the action counts.")


class HistoryCorrection(BaseModel):
    correctionId: str
    type: Literal["ActionVoided", "UserActionsVoided", "UserActionsRestored", "UserRenamed"]
    actionId: str | None
    username: str | None
    reason: str
    by: str
    at: str
    affected: int = Field(description="How many actions it voided or restored.")


class History(PeriodFields):
    userId: str
    board: str
    limit: int
    actions: list[HistoryAction] = Field(
        description="The user's actions on the board's period, in log-time order."
    )
    corrections: list[HistoryCorrection] = Field(
        description="Every correction of the user (all boards), in log order; the same on every page."
    )
    nextCursor: str | None = Field(description="Pass it as `cursor` for the next page; null at the end.")
