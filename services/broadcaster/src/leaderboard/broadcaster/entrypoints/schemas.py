"""What the broadcaster's HTTP answers look like (OpenAPI); the handlers answer plain dicts shaped
like these, serialised once, since the frames and pages are built from Redis rows already."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from leaderboard.common.web import ErrorModel


class Entry(BaseModel):
    rank: int
    userId: str
    username: str
    score: int


class LeaderboardPage(BaseModel):
    leaderboard: list[Entry]
    page: int
    limit: int
    sort: Literal["DESC", "ASC"]
    version: int
    epoch: str
    total: int


class UserRank(Entry):
    neighbours: list[Entry]


ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorModel} for c in (401, 404, 422)}
