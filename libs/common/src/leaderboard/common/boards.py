"""The board catalog and the time-window maths of boards (issue 10). Pure: no I/O but reading the TOML.

A board is configuration, not code: ``id``, ``rule`` (``sum`` adds points, ``best`` keeps the best single
event, ``latest`` keeps the last one), ``order`` (``desc``: higher is better; ``asc``: lower is better,
where ``best`` keeps the lowest), ``window`` (``all`` | ``daily`` | ``weekly`` | ``monthly`` | ``season``,
all in UTC), ``types`` (the action types that feed it; all when absent) and ``keep`` (how many past periods
stay queryable; Postgres keeps every period, Redis only these). The catalog is a TOML file
(``LEADERBOARD_BOARDS_FILE``), the packaged ``boards.default.toml`` when unset.

Shared by the scorer (which period an event feeds, when a period rolls over, when Redis drops one) and
the readers (the current period and ``resetsAt`` of a board, parsing ``?period=``). Every function takes
the time it needs as an argument (``now`` or an event's ``acceptedAt``): callers inject their clock.

Period ids: ``all`` (window ``all``), ``2026-11-23`` (daily), ``2026-W47`` (ISO week, starting Monday
00:00 UTC; ISO week-numbering years, so 2026-12-31 is in ``2026-W53`` and 2027-01-04 starts ``2027-W01``),
``2026-11`` (monthly), or a season's own id. A period is ``[start, end)``; ``end`` is its ``resetsAt``.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from leaderboard.common.events import ActionType

Rule = Literal["sum", "best", "latest"]
Order = Literal["desc", "asc"]
Window = Literal["all", "daily", "weekly", "monthly", "season"]
Clock = Callable[[], datetime]

ALL = "all"  # the one period of an all-time board
# Board ids go into Redis keys ("{prefix}:board:{id}:...") and URLs: no ":" and nothing to escape.
BoardId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
SeasonId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")]

_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("season times must carry a time zone (write them with Z)")
    return value.astimezone(UTC)


def system_clock(offset_s: float = 0.0) -> Clock:
    """The wall clock in UTC, shifted by ``offset_s`` (a test hook; 0 in production)."""
    shift = timedelta(seconds=offset_s)
    return lambda: datetime.now(UTC) + shift


class UnknownPeriod(ValueError):
    """A period id that is malformed or names no period of the board."""


@dataclass(frozen=True, order=True)
class Period:
    """One period of a board: ``[start, end)`` in UTC. ``end`` is the period's ``resetsAt``; an all-time
    board's single period has neither."""

    start: datetime | None
    end: datetime | None
    id: str

    @property
    def resets_at(self) -> datetime | None:
        return self.end


ALL_TIME = Period(None, None, ALL)


class Season(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: SeasonId
    start: Annotated[datetime, AfterValidator(_utc)]
    end: Annotated[datetime, AfterValidator(_utc)]

    @model_validator(mode="after")
    def _ordered(self) -> Season:
        if self.id == ALL:
            raise ValueError("a season cannot be called 'all'")
        if self.end <= self.start:
            raise ValueError(f"season {self.id!r} must end after it starts")
        return self

    def period(self) -> Period:
        return Period(self.start, self.end, self.id)


class BoardSpec(BaseModel):
    """One board of the catalog, with the window maths of its periods."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: BoardId
    rule: Rule = "sum"
    order: Order = "desc"
    window: Window = "all"
    seasons: tuple[Season, ...] = ()
    types: frozenset[ActionType] | None = None  # None: every action type feeds the board
    keep: int = Field(1, ge=0, le=1000)

    @field_validator("seasons")
    @classmethod
    def _by_start(cls, seasons: tuple[Season, ...]) -> tuple[Season, ...]:
        return tuple(sorted(seasons, key=lambda s: s.start))

    @model_validator(mode="after")
    def _seasons(self) -> BoardSpec:
        if (self.window == "season") != bool(self.seasons):
            raise ValueError(f"board {self.id!r}: seasons are given exactly when window = 'season'")
        ordered = self.seasons
        for a, b in itertools.pairwise(ordered):
            if b.start < a.end:
                raise ValueError(f"board {self.id!r}: seasons {a.id!r} and {b.id!r} overlap")
        if len({s.id for s in ordered}) != len(ordered):
            raise ValueError(f"board {self.id!r}: season ids must be unique")
        if self.types is not None and not self.types:
            raise ValueError(f"board {self.id!r}: types, when given, names at least one action type")
        return self

    @property
    def ascending(self) -> bool:
        return self.order == "asc"

    def feeds(self, action_type: str) -> bool:
        return self.types is None or action_type in self.types

    def period_at(self, at: datetime) -> Period | None:
        """The period an instant belongs to (None: between or outside a season board's seasons)."""
        at = _utc(at)
        if self.window == "all":
            return ALL_TIME
        if self.window == "season":
            return next((s.period() for s in self.seasons if s.start <= at < s.end), None)
        return self._calendar(at.date())

    def _calendar(self, day: date) -> Period:
        if self.window == "daily":
            start = day
            end = day + timedelta(days=1)
            pid = day.isoformat()
        elif self.window == "weekly":
            year, week, weekday = day.isocalendar()
            start = day - timedelta(days=weekday - 1)
            end = start + timedelta(days=7)
            pid = f"{year:04d}-W{week:02d}"
        else:
            start = day.replace(day=1)
            end = (start + timedelta(days=32)).replace(day=1)
            pid = f"{start.year:04d}-{start.month:02d}"
        return Period(_midnight(start), _midnight(end), pid)

    def period(self, period_id: str) -> Period:
        """The period named ``period_id`` (as a client writes it in ``?period=``); ``UnknownPeriod``
        when it is malformed or not a period of this board."""
        found = self._parse(period_id)
        if found is None or found.id != period_id:  # round trip: refuses 2026-1-5, 2026-W60, ...
            raise UnknownPeriod(f"{period_id!r} is not a period of board {self.id!r}")
        return found

    def _parse(self, text: str) -> Period | None:
        try:
            if self.window == "all":
                return ALL_TIME if text == ALL else None
            if self.window == "season":
                return next((s.period() for s in self.seasons if s.id == text), None)
            if self.window == "daily" and (m := _DAY.match(text)):
                return self._calendar(date(int(m[1]), int(m[2]), int(m[3])))
            if self.window == "weekly" and (m := _WEEK.match(text)):
                return self._calendar(date.fromisocalendar(int(m[1]), int(m[2]), 1))
            if self.window == "monthly" and (m := _MONTH.match(text)):
                return self._calendar(date(int(m[1]), int(m[2]), 1))
        except ValueError:  # a day, week or month that does not exist
            return None
        return None

    def next_period(self, period: Period) -> Period | None:
        """The period after ``period`` (None for an all-time board and after the last season)."""
        if period.end is None:
            return None
        if self.window == "season":
            return next((s.period() for s in self.seasons if s.start >= period.end), None)
        return self._calendar(period.end.date())

    def previous(self, period: Period, count: int) -> list[Period]:
        """Up to ``count`` periods before ``period``, the most recent first."""
        out: list[Period] = []
        if self.window == "all":
            return out
        if self.window == "season":
            before = [s.period() for s in self.seasons if period.start and s.end <= period.start]
            return list(reversed(before))[:count]
        cursor = period
        while len(out) < count and cursor.start is not None:
            cursor = self._calendar(cursor.start.date() - timedelta(days=1))
            out.append(cursor)
        return out

    def current(self, now: datetime) -> Period | None:
        """The period running at ``now``; for a season board between seasons, None."""
        return self.period_at(now)

    def expires_at(self, period: Period) -> datetime | None:
        """When ``period`` stops being one of the ``keep`` most recent past periods: the start of the
        period ``keep + 1`` after it (never, for an all-time board or after the last season)."""
        cursor: Period | None = period
        for _ in range(self.keep + 1):
            cursor = self.next_period(cursor) if cursor is not None else None
        return cursor.start if cursor is not None else None

    def kept(self, period: Period, now: datetime) -> bool:
        """Whether ``period`` is current, upcoming or one of the ``keep`` last past ones at ``now``
        (Redis holds exactly these; older periods are read from Postgres)."""
        ends = self.expires_at(period)
        return ends is None or _utc(now) < ends

    def past(self, period: Period, now: datetime) -> bool:
        return period.end is not None and period.end <= _utc(now)

    def queryable(self, period: Period, now: datetime) -> bool:
        """What ``?period=`` may read: a period that has started and is still kept."""
        started = period.start is None or period.start <= _utc(now)
        return started and self.kept(period, now)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


class _CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    boards: list[BoardSpec] = Field(min_length=1)


class BoardCatalog:
    """Every configured board, in the file's order."""

    def __init__(self, boards: list[BoardSpec]) -> None:
        ids = [b.id for b in boards]
        duplicate = next((i for i in ids if ids.count(i) > 1), None)
        if duplicate is not None:
            raise ValueError(f"board {duplicate!r} is configured twice")
        self.boards = {b.id: b for b in boards}

    @classmethod
    def load(cls, path: Path | None = None) -> BoardCatalog:
        if path is None:
            text = resources.files("leaderboard.common").joinpath("boards.default.toml").read_text()
        else:
            text = path.read_text()
        return cls.parse(text)

    @classmethod
    def parse(cls, text: str) -> BoardCatalog:
        return cls(_CatalogFile.model_validate(tomllib.loads(text)).boards)

    def get(self, board: str) -> BoardSpec | None:
        return self.boards.get(board)

    def __iter__(self) -> Iterator[BoardSpec]:
        return iter(self.boards.values())

    def __len__(self) -> int:
        return len(self.boards)

    def fed_by(self, action_type: str, accepted_at: datetime) -> list[tuple[BoardSpec, Period]]:
        """The boards an event of ``action_type`` feeds, each with the period of its ``acceptedAt``
        (the log's time, so a replay puts every event in the same period)."""
        out = []
        for spec in self.boards.values():
            if spec.feeds(action_type):
                period = spec.period_at(accepted_at)
                if period is not None:
                    out.append((spec, period))
        return out
