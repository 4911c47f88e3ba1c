"""The broadcaster's use cases: read a page of a board's period, a user's rank, the ranks of a list of
users, a board as it stood at a past moment and a user's history on a board (issue 11), and bring the
hub up to a resuming client's version. They take the ports and raise domain
exceptions (``errors.py``), never HTTP ones.

Where a read comes from (issue 10): the current period and the past periods the board still keeps
are in Redis; a past period Redis no longer holds (or lost) is read from Postgres (``Archive``).
Entry metadata is only in Postgres: a read served from Redis takes it from there by primary key, and
serves the entries without it (logged) when Postgres does not answer within
:data:`METADATA_TIMEOUT_S`, and then for :data:`METADATA_PAUSE_S` does not ask (so a Postgres outage
costs the hot read path one timeout, not one per board version): the live board never depends on
Postgres.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from leaderboard.broadcaster.adapters.archive import Archive, HistoryPage
from leaderboard.broadcaster.adapters.reads import NOT_RANKED, Around, Meta, Page
from leaderboard.broadcaster.domain import Cursor, Resolved, with_shared_ranks
from leaderboard.broadcaster.errors import ArchiveUnavailable, UnknownPeriod, UserNotRanked
from leaderboard.common.boards import BoardSpec, Period
from leaderboard.common.boards import UnknownPeriod as BadPeriodId

if TYPE_CHECKING:
    from leaderboard.broadcaster.bootstrap import Ports

log = logging.getLogger(__name__)
EMPTY = Page(Meta("", 0, 0, []), 0, [])  # a configured board nobody has scored on yet
CATCH_UP_S = 2.0  # a resuming client waits at most this long for Redis before it gets what we hold
METADATA_TIMEOUT_S = 1.0  # a page read from Redis waits at most this long for its entries' metadata
ARCHIVE_TIMEOUT_S = 10.0
METADATA_PAUSE_S = 5.0  # after a failed metadata read, reads skip metadata this long
WARN_EVERY_S = 60.0
_last_warning = 0.0
_metadata_paused_until = 0.0
T = TypeVar("T")


def _archive(p: Ports) -> Archive:
    if p.archive is None:
        raise ArchiveUnavailable("no Postgres is configured")
    return p.archive


async def _archived(call: Awaitable[T]) -> T:
    """An archive read; Postgres not answering (down, not migrated yet, too slow) is a 503."""
    try:
        return await asyncio.wait_for(call, ARCHIVE_TIMEOUT_S)
    except Exception as exc:
        log.warning("archive read failed: %s", exc)
        raise ArchiveUnavailable(type(exc).__name__) from None


# Metadata already read per board period, valid for one state of its Redis board: (epoch, rev) names it
# (rev rises on every write to the board, and a rebuild starts a new epoch), so a read of an unchanged
# board asks Postgres only for users it has not seen yet. Bounded per board period.
_METADATA_CACHE: dict[tuple[str, str], tuple[tuple[str, int], dict[str, Any]]] = {}
METADATA_CACHE_USERS = 50_000


def _cached_metadata(board: str, period: str, state: tuple[str, int] | None) -> dict[str, Any] | None:
    if state is None:
        return None
    cached = _METADATA_CACHE.get((board, period))
    if cached is None or cached[0] != state or len(cached[1]) > METADATA_CACHE_USERS:
        cached = (state, {})
        _METADATA_CACHE[(board, period)] = cached
    return cached[1]


def metadata_complete() -> bool:
    """False while reads skip metadata (Postgres did not answer lately): a page built now may lack it."""
    return time.monotonic() >= _metadata_paused_until


async def with_metadata(
    p: Ports,
    board: str,
    period: str,
    entries: list[dict[str, Any]],
    state: tuple[str, int] | None = None,
) -> list[dict[str, Any]]:
    """``entries`` with the ``metadata`` of those whose entry has some (best effort, see the module).
    ``state`` (the board's epoch and rev) lets reads of an unchanged board reuse what was read."""
    global _last_warning, _metadata_paused_until
    if p.archive is None or not entries or time.monotonic() < _metadata_paused_until:
        return entries
    known = _cached_metadata(board, period, state)
    wanted = [e["userId"] for e in entries if known is None or e["userId"] not in known]
    found: dict[str, Any] = {}
    if wanted:
        try:
            found = await asyncio.wait_for(p.archive.metadata(board, period, wanted), METADATA_TIMEOUT_S)
        except Exception as exc:
            _metadata_paused_until = time.monotonic() + METADATA_PAUSE_S
            if time.monotonic() - _last_warning > WARN_EVERY_S:
                _last_warning = time.monotonic()
                log.warning("entries served without metadata: Postgres did not answer (%s)", exc)
            return entries
        if known is not None:
            known.update({user: found.get(user) for user in wanted})
    if known is not None:
        found = known
    return [
        {**e, "metadata": found[e["userId"]]} if found.get(e["userId"]) is not None else e for e in entries
    ]


async def board_page(
    p: Ports, board: str, page: int, limit: int, descending: bool, period: str | None = None
) -> tuple[Resolved, Page]:
    """One page of the board's current period or of ``period``; ranks are absolute. The current
    period with no score yet is empty, not unknown."""
    r = p.periods.resolve(board, period)
    offset = (page - 1) * limit
    if r.kept:
        found = await p.reader.page(
            board, offset, limit, descending, period=r.period.id, ascending=r.spec.ascending
        )
        if found is not None:
            state = (found.meta.epoch, found.meta.rev)
            entries = await with_metadata(p, board, r.period.id, found.entries, state)
            return r, replace(found, entries=entries)
        if r.current:
            return r, EMPTY
    return r, await _archived(_archive(p).page(board, r.period.id, offset, limit, descending))


async def user_rank(
    p: Ports, board: str, user_id: str, around: int, period: str | None = None
) -> tuple[Resolved, dict[str, Any]]:
    """The user's entry with ``around`` neighbours either side."""
    r = p.periods.resolve(board, period)
    if r.kept:
        found = await p.reader.around(board, user_id, around, r.period.id, r.spec.ascending)
        if isinstance(found, Around):
            entries = await with_metadata(p, board, r.period.id, [found.me, *found.neighbours])
            return r, {**entries[0], "neighbours": entries[1:]}
        if found == NOT_RANKED or r.current:
            raise UserNotRanked(user_id, board)
    archived = await _archived(_archive(p).around(board, r.period.id, user_id, around))
    if archived is None:
        raise UserNotRanked(user_id, board)
    _meta, me, neighbours = archived
    return r, {**me, "neighbours": neighbours}


async def ranks(
    p: Ports, board: str, users: list[str], period: str | None = None
) -> tuple[Resolved, Page, list[str]]:
    """The entries of ``users`` on the board, in board order, and the users without one."""
    r = p.periods.resolve(board, period)
    found: Page | None = None
    if r.kept:
        found = await p.reader.ranks(board, users, r.period.id, r.spec.ascending)
        if found is not None:
            found = replace(found, entries=await with_metadata(p, board, r.period.id, found.entries))
        elif r.current:
            found = EMPTY
    if found is None:
        found = await _archived(_archive(p).ranks(board, r.period.id, users))
    ranked = {e["userId"] for e in found.entries}
    return r, found, [u for u in users if u not in ranked]


@dataclass(frozen=True)
class PastBoard:
    """A board's period as it stood at ``at``: every entry in board order, with its shared rank."""

    spec: BoardSpec
    period: Period
    at: datetime
    entries: list[dict[str, Any]]


def _past_period(spec: BoardSpec, at: datetime, period: str | None) -> Period:
    """The named period, or the one ``at`` falls in (404 when there is none: between seasons)."""
    if period is not None:
        try:
            return spec.period(period)
        except BadPeriodId:
            raise UnknownPeriod(spec.id, period) from None
    found = spec.period_at(at)
    if found is None:
        raise UnknownPeriod(spec.id, None)
    return found


async def board_at(p: Ports, board: str, at: datetime, period: str | None = None) -> PastBoard:
    """The board as it stood at ``at`` (already checked not to be in the future), folded from
    Postgres's record of the log with the live rules (``leaderboard.common.history.board_at``);
    names are today's."""
    spec = p.periods.spec(board)
    chosen = _past_period(spec, at, period)
    result, names = await _archived(_archive(p).board_at(p.periods.catalog, board, at, chosen))
    entries: list[dict[str, Any]] = []
    for e in result.entries:
        entry: dict[str, Any] = {
            "rank": e.rank,
            "userId": e.user_id,
            "username": names.get(e.user_id) or e.user_id[:8],
            "score": e.score,
        }
        if e.metadata is not None:
            entry["metadata"] = e.metadata
        entries.append(entry)
    return PastBoard(spec, chosen, at, with_shared_ranks(entries))


async def history(
    p: Ports, user_id: str, board: str, period: str | None, after: Cursor | None, limit: int
) -> tuple[Resolved, HistoryPage]:
    """A page of the user's actions on the board's period (the current one when None), in log-time
    order, and the user's corrections. A user with no action there gets an empty page."""
    r = p.periods.resolve(board, period)
    found = await _archived(_archive(p).history(user_id, r.spec, r.period, after, limit))
    return r, found


async def catch_up(p: Ports, board: str, epoch: str | None, since: int | None) -> None:
    """A client resuming from a version this instance has not seen yet (it came from a faster
    replica, or from an instance that is draining) must not be handed an older state: take the newer
    one from Redis first. Likewise when this instance holds no state of the board yet (it started
    before the scorer built the board, and the announcement went out before it was listening): the
    client's first frame is then the board as Redis has it, rather than the empty placeholder."""
    cur = p.hub.current(board)
    if cur is not None:
        if since is None or epoch is None:
            return
        if cur.epoch == epoch and since <= cur.version:
            return
    try:
        await asyncio.wait_for(p.feed.refresh(board), CATCH_UP_S)
    except Exception as exc:
        log.warning("could not catch up with Redis for a resuming client: %s", exc)
