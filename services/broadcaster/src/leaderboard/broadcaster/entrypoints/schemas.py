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
