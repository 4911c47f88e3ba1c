"""Board rules over an event history, with no I/O: the one fold the scorer applies live and that
readers apply to the past (issue 11).

Why here and not in the scorer: the broadcaster answers ``GET /api/v1/leaderboard?at=TIME`` and the
CLI ``leaderboard board --at TIME``, and services never import one another. The scorer's domain
re-exports :func:`apply_rule`, :func:`entry_keys` and :func:`fold_entries`, so the live board and a
board "as it was" are folded by the same code: same rules (sum | best | latest, asc | desc), same
windows (the period an event's ``acceptedAt`` falls in) and the same tie order (score, then the
acceptedAt that reached it, then userId).

Corrections (``leaderboard.common.events.Correction``): :func:`voided_at` says which actions were
voided at a moment, replaying the corrections decided by then in log order. A void covers the
actions accepted by the correction's ``at`` (the actions that preceded it on the log), a restore
lifts it again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol
from uuid import UUID

from leaderboard.common.boards import BoardCatalog, BoardSpec, Period, Rule
from leaderboard.common.events import epoch_ms
from leaderboard.common.ranking import sort_key


class Scored(Protocol):
    """What a rule needs of an event (``ActionCompleted`` is one, so is :class:`PastAction`)."""

    @property
    def action_id(self) -> UUID: ...
    @property
    def user_id(self) -> UUID: ...
    @property
    def action_type(self) -> str: ...
    @property
    def points(self) -> int: ...
    @property
    def accepted_at(self) -> datetime: ...
    @property
    def metadata(self) -> dict[str, Any] | None: ...


EntryKey = tuple[str, str, str]  # (board, period id, userId)


@dataclass(frozen=True)
class Entry:
    """A user's entry on one board and period: the score, when the user reached it (the acceptedAt of
    the event that set it), that event's actionId and metadata, and the row's version in Postgres."""

    score: int
    reached_ms: int
    action_id: UUID | None
    metadata: dict[str, Any] | None
    version: int = 0


def apply_rule(rule: Rule, ascending: bool, entry: Entry | None, event: Scored) -> Entry | None:
    """The entry after ``event``, or None when the event leaves it as it was.

    ``sum`` adds the points (the entry keeps the newest metadata sent: an event without metadata
    leaves the last one); ``best`` keeps the best single event (the highest, or for an ``asc``
    board the lowest; an equal score keeps the earlier event, which reached it first); ``latest``
    takes every event's points. For ``best`` and ``latest`` the metadata is the one of the event
    that set the score. The first event of a user on a board always makes the entry."""
    at = epoch_ms(event.accepted_at)
    version = entry.version if entry is not None else 0
    if entry is None or rule == "latest":
        return Entry(event.points, at, event.action_id, event.metadata, version)
    if rule == "sum":
        metadata = event.metadata if event.metadata is not None else entry.metadata
        return Entry(entry.score + event.points, at, event.action_id, metadata, version)
    better = event.points < entry.score if ascending else event.points > entry.score
    return Entry(event.points, at, event.action_id, event.metadata, version) if better else None


def entry_keys(catalog: BoardCatalog, event: Scored) -> list[EntryKey]:
    """The (board, period, user) entries ``event`` feeds."""
    user = str(event.user_id)
    return [
        (spec.id, period.id, user) for spec, period in catalog.fed_by(event.action_type, event.accepted_at)
    ]


def fold_entries(
    catalog: BoardCatalog, events: Sequence[Scored], current: Mapping[EntryKey, Entry]
) -> dict[EntryKey, Entry]:
    """Apply newly accepted ``events`` (in log order) to the ``current`` entries; returns the entries
    that changed, each with the version it had (the store bumps it when writing)."""
    changed: dict[EntryKey, Entry] = {}
    for event in events:
        for key in entry_keys(catalog, event):
            spec = catalog.boards[key[0]]
            before = changed.get(key) or current.get(key)
            after = apply_rule(spec.rule, spec.ascending, before, event)
            if after is not None:
                changed[key] = after
    return changed


@dataclass(frozen=True)
class PastAction:
    """An applied action as the ``actions`` table (or the log) keeps it."""

    action_id: UUID
    user_id: UUID
    action_type: str
    points: int
    accepted_at: datetime
    metadata: dict[str, Any] | None = None


CorrectionKind = Literal["ActionVoided", "UserActionsVoided", "UserActionsRestored", "UserRenamed"]


@dataclass(frozen=True)
class PastCorrection:
    """A correction as the ``corrections`` table (or the log) keeps it, in log order."""

    kind: CorrectionKind
    user_id: UUID
    at: datetime
    action_id: UUID | None = None
    username: str | None = None


def voided_at(
    actions: Iterable[PastAction], corrections: Iterable[PastCorrection], at: datetime | None
) -> set[UUID]:
    """The actionIds that stood voided at ``at`` (every correction when None): the corrections
    decided by then, in order. A user's void covers their actions accepted by its ``at``; a restore
    without an actionId lifts every void of the user."""
    by_user: dict[UUID, list[PastAction]] = {}
    for a in actions:
        by_user.setdefault(a.user_id, []).append(a)
    voided: set[UUID] = set()
    for c in corrections:
        if at is not None and c.at > at:
            continue
        mine = by_user.get(c.user_id, [])
        if c.kind == "ActionVoided" and c.action_id is not None:
            voided.add(c.action_id)
        elif c.kind == "UserActionsVoided":
            voided |= {a.action_id for a in mine if a.accepted_at <= c.at}
        elif c.kind == "UserActionsRestored":
            voided -= {c.action_id} if c.action_id is not None else {a.action_id for a in mine}
    return voided


@dataclass(frozen=True)
class StandingEntry:
    """One line of a board at a moment, in board order (``rank`` is strict, 1-based)."""

    rank: int
    user_id: str
    score: int
    reached_ms: int
    action_id: UUID | None
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class BoardAt:
    board: str
    period: str
    at: datetime
    entries: list[StandingEntry]


def board_at(
    catalog: BoardCatalog,
    board: str,
    actions: Sequence[PastAction],
    corrections: Sequence[PastCorrection],
    at: datetime,
    period: str | None = None,
) -> BoardAt:
    """The board ``board`` as it stood at ``at``: the actions accepted by then (in log order), less
    those voided by then, folded with the board's rule into the period ``at`` falls in (or the
    given ``period``), ranked in the live board's order. Raises KeyError for an unknown board and
    ``UnknownPeriod`` for a period the board does not have."""
    spec = catalog.boards[board]
    chosen = spec.period(period) if period is not None else spec.period_at(at)
    if chosen is None:  # a season board between seasons: nothing was live
        return BoardAt(board, "", at, [])
    gone = voided_at(actions, corrections, at)
    counted = [a for a in actions if a.accepted_at <= at and a.action_id not in gone]
    entries = _fold_one(catalog, spec, chosen, counted)
    return BoardAt(board, chosen.id, at, ranked(entries, spec.ascending))


def _fold_one(
    catalog: BoardCatalog, spec: BoardSpec, period: Period, actions: Sequence[PastAction]
) -> dict[str, Entry]:
    folded = fold_entries(catalog, actions, {})
    return {user: e for (b, p, user), e in folded.items() if b == spec.id and p == period.id}


def ranked(entries: Mapping[str, Entry], ascending: bool) -> list[StandingEntry]:
    order = sorted(entries.items(), key=lambda kv: sort_key(kv[1].score, kv[1].reached_ms, kv[0], ascending))
    return [
        StandingEntry(i, user, e.score, e.reached_ms, e.action_id, e.metadata)
        for i, (user, e) in enumerate(order, 1)
    ]


# Postgres's record of the log, as board_at takes it: the actions that could feed a board, accepted by
# a moment (from a period's start when given), and the corrections decided by then, in log order. Used
# by ``leaderboard board --at`` and the broadcaster's ``?at=``; the connection is asyncpg's.
PAST_ACTIONS = """
SELECT action_id, user_id, action_type, points, accepted_at, metadata FROM actions
WHERE accepted_at <= $1 AND ($2::text[] IS NULL OR action_type = ANY($2))
  AND ($3::timestamptz IS NULL OR accepted_at >= $3)
ORDER BY kafka_partition, kafka_offset, action_id
"""
PAST_CORRECTIONS = """
SELECT event_type, user_id, at, action_id, username FROM corrections
WHERE at <= $1 ORDER BY kafka_partition, kafka_offset, correction_id
"""


class Fetches(Protocol):
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...


async def load_past(
    conn: Fetches, spec: BoardSpec, at: datetime, since: datetime | None = None
) -> tuple[list[PastAction], list[PastCorrection]]:
    """The actions that could feed ``spec`` accepted by ``at`` (from ``since``), and the corrections
    decided by then, as :func:`board_at` takes them."""
    types = sorted(spec.types) if spec.types else None
    actions = [
        PastAction(
            r["action_id"],
            r["user_id"],
            r["action_type"],
            int(r["points"]),
            r["accepted_at"],
            json.loads(r["metadata"]) if r["metadata"] is not None else None,
        )
        for r in await conn.fetch(PAST_ACTIONS, at, types, since)
    ]
    corrections = [
        PastCorrection(r["event_type"], r["user_id"], r["at"], r["action_id"], r["username"])
        for r in await conn.fetch(PAST_CORRECTIONS, at)
    ]
    return actions, corrections
