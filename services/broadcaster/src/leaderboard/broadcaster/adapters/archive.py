"""Board reads from Postgres: past periods Redis no longer holds, and the entries' metadata.

The scorer keeps every board, period and user in ``board_entries`` (issue 10), in the board order
``ORDER BY rank_key, reached_at, user_id`` (``rank_key`` is ``-score`` on a desc board, the score on an
asc one); names come from ``users``, the period's epoch and last announced version from ``boards``.
Shared ranks are ``rank() OVER (ORDER BY rank_key)``: standard competition ranking, as Redis reads
compute them. Redis does not hold entry metadata (the scorer keeps it in Postgres only), so a read
served from Redis takes its entries' metadata from here, by primary key (:meth:`Archive.metadata`).

The past (issue 11): :meth:`Archive.board_at` folds the board as it stood at a moment from the
``actions`` and ``corrections`` tables with :func:`leaderboard.common.history.board_at` (the live rules,
windows and tie order); :meth:`Archive.history` pages through one user's actions on a board (the
provenance of a score), voided ones with who voided them, when and why.

The pool is created without connections (``min_size=0``): the broadcaster starts and serves the
current periods from Redis while Postgres is down; only archive reads and metadata need it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from leaderboard.broadcaster.adapters.reads import Meta, Page
from leaderboard.broadcaster.domain import Cursor, iso_ms
from leaderboard.common.boards import BoardCatalog, BoardSpec, Period
from leaderboard.common.history import BoardAt, board_at, load_past

# Every entry of one period with its strict and shared rank. The window runs over the whole period:
# archives are read rarely, and the index (board, period, rank_key, reached_at, user_id) feeds it in order.
RANKED = """
SELECT e.user_id, coalesce(u.username, left(e.user_id::text, 8)) AS username, e.score, e.metadata,
       row_number() OVER (ORDER BY e.rank_key, e.reached_at, e.user_id) AS rank,
       rank() OVER (ORDER BY e.rank_key) AS shared_rank
FROM board_entries e LEFT JOIN users u USING (user_id)
WHERE e.board = $1 AND e.period = $2
"""
PAGE_BEST_FIRST = f"SELECT * FROM ({RANKED}) r ORDER BY rank OFFSET $3 LIMIT $4"  # noqa: S608 (constant text, no input)
PAGE_WORST_FIRST = f"SELECT * FROM ({RANKED}) r ORDER BY rank DESC OFFSET $3 LIMIT $4"  # noqa: S608 (constant text, no input)
RANKS = f"SELECT * FROM ({RANKED}) r WHERE user_id = ANY($3::uuid[]) ORDER BY rank"  # noqa: S608 (constant text, no input)
BETWEEN = f"SELECT * FROM ({RANKED}) r WHERE rank BETWEEN $3 AND $4 ORDER BY rank"  # noqa: S608 (constant text, no input)
STATE = "SELECT epoch, version FROM boards WHERE board = $1 AND period = $2"
COUNT = "SELECT count(*) FROM board_entries WHERE board = $1 AND period = $2"
METADATA = (
    "SELECT user_id, metadata FROM board_entries WHERE board = $1 AND period = $2 "
    "AND user_id = ANY($3::uuid[]) AND metadata IS NOT NULL"
)


# --- The past (issue 11): a board at a moment, and a user's provenance --------------------------------
# As ``tools/cli/src/leaderboard/cli/history.py`` reads them (the broadcaster cannot import the CLI):
# every action that could feed the board accepted by the moment (voided ones too: which stood voided
# at the moment is the corrections' fold), from the period's start when it has one, in log order.
NAMES = "SELECT user_id::text, username FROM users WHERE user_id = ANY($1::uuid[])"
# One user's actions on a board (its types) and period, in log-time order (acceptedAt, then actionId),
# after the cursor's (acceptedAt, actionId) when there is one. ``actions_user_idx`` (user_id,
# accepted_at) feeds it.
USER_ACTIONS = """
SELECT action_id, action_type, points, accepted_at, occurred_at, source, metadata,
       voided_at, void_reason, voided_by, void_correction_id
FROM actions
WHERE user_id = $1 AND ($2::text[] IS NULL OR action_type = ANY($2))
  AND ($3::timestamptz IS NULL OR accepted_at >= $3) AND ($4::timestamptz IS NULL OR accepted_at < $4)
  AND ($5::timestamptz IS NULL OR (accepted_at, action_id) > ($5, $6::uuid))
ORDER BY accepted_at, action_id
LIMIT $7
"""
MAX_CORRECTIONS = 1000  # a user's corrections listed with their history (admins' decisions: few)
USER_CORRECTIONS = """
SELECT correction_id, event_type, action_id, username, reason, by, at, affected FROM corrections
WHERE user_id = $1 ORDER BY kafka_partition, kafka_offset, correction_id
LIMIT $2
"""


def _action(r: asyncpg.Record) -> dict[str, Any]:
    item: dict[str, Any] = {
        "actionId": str(r["action_id"]),
        "actionType": r["action_type"],
        "points": int(r["points"]),
        "acceptedAt": iso_ms(r["accepted_at"]),
        "occurredAt": iso_ms(r["occurred_at"]),
        "source": r["source"],
        "metadata": json.loads(r["metadata"]) if r["metadata"] is not None else None,
        "voided": None,
    }
    if r["voided_at"] is not None:
        item["voided"] = {
            "at": iso_ms(r["voided_at"]),
            "reason": r["void_reason"],
            "by": r["voided_by"],
            "correctionId": str(r["void_correction_id"]) if r["void_correction_id"] else None,
        }
    return item


def _correction(r: asyncpg.Record) -> dict[str, Any]:
    return {
        "correctionId": str(r["correction_id"]),
        "type": r["event_type"],
        "actionId": str(r["action_id"]) if r["action_id"] is not None else None,
        "username": r["username"],
        "reason": r["reason"],
        "by": r["by"],
        "at": iso_ms(r["at"]),
        "affected": int(r["affected"]),
    }


@dataclass(frozen=True)
class HistoryPage:
    """A page of a user's actions (``last``: the cursor of its last one, None when it is the end)."""

    actions: list[dict[str, Any]]
    corrections: list[dict[str, Any]]
    last: Cursor | None


def _entry(r: asyncpg.Record) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "rank": int(r["rank"]),
        "sharedRank": int(r["shared_rank"]),
        "userId": str(r["user_id"]),
        "username": r["username"],
        "score": int(r["score"]),
    }
    if r["metadata"] is not None:
        entry["metadata"] = json.loads(r["metadata"])
    return entry


class Archive:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def _meta(self, conn: asyncpg.Connection, board: str, period: str) -> Meta:
        row = await conn.fetchrow(STATE, board, period)
        return Meta(row["epoch"], int(row["version"]), 0, []) if row else Meta("", 0, 0, [])

    async def page(self, board: str, period: str, offset: int, limit: int, descending: bool) -> Page:
        """A page of a period, in board order or reversed (``descending`` False: the worst first)."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            meta = await self._meta(conn, board, period)
            total = int(await conn.fetchval(COUNT, board, period))
            sql = PAGE_BEST_FIRST if descending else PAGE_WORST_FIRST
            rows = await conn.fetch(sql, board, period, offset, limit)
        return Page(meta, total, [_entry(r) for r in rows], archived=True)

    async def around(
        self, board: str, period: str, user_id: str, n: int
    ) -> tuple[Meta, dict[str, Any], list[dict[str, Any]]] | None:
        """A user's entry with ``n`` neighbours either side; None when the user has no entry."""
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            meta = await self._meta(conn, board, period)
            mine = await conn.fetch(RANKS, board, period, [user_id])
            if not mine:
                return None
            rank = int(mine[0]["rank"])
            rows = await conn.fetch(BETWEEN, board, period, rank - n, rank + n)
        entries = [_entry(r) for r in rows]
        me = next(e for e in entries if e["userId"] == user_id)
        return meta, me, [e for e in entries if e["userId"] != user_id]

    async def ranks(self, board: str, period: str, users: list[str]) -> Page:
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            meta = await self._meta(conn, board, period)
            total = int(await conn.fetchval(COUNT, board, period))
            rows = await conn.fetch(RANKS, board, period, users)
        return Page(meta, total, [_entry(r) for r in rows], archived=True)

    async def metadata(self, board: str, period: str, users: list[str]) -> dict[str, Any]:
        """userId -> the metadata of that user's entry, for the users whose entry has some."""
        if not users:
            return {}
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(METADATA, board, period, users)
        return {str(r["user_id"]): json.loads(r["metadata"]) for r in rows}

    async def board_at(
        self, catalog: BoardCatalog, board: str, at: datetime, period: Period
    ) -> tuple[BoardAt, dict[str, str]]:
        """The board's ``period`` as it stood at ``at``, and today's names of its users."""
        spec = catalog.boards[board]
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            actions, corrections = await load_past(conn, spec, at, period.start)
            result = board_at(catalog, board, actions, corrections, at, period.id)
            rows = await conn.fetch(NAMES, [e.user_id for e in result.entries])
        return result, {r["user_id"]: r["username"] for r in rows}

    async def history(
        self, user_id: str, spec: BoardSpec, period: Period, after: Cursor | None, limit: int
    ) -> HistoryPage:
        """Up to ``limit`` of the user's actions on ``spec``'s ``period`` after ``after``, and every
        correction of the user (at most :data:`MAX_CORRECTIONS`, in log order)."""
        types = sorted(spec.types) if spec.types else None
        since = (after.accepted_at, after.action_id) if after is not None else (None, None)
        args = (UUID(user_id), types, period.start, period.end, *since, limit + 1)
        async with self.pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await conn.fetch(USER_ACTIONS, *args)
            fixes = await conn.fetch(USER_CORRECTIONS, UUID(user_id), MAX_CORRECTIONS)
        more = len(rows) > limit
        rows = rows[:limit]
        last = Cursor(rows[-1]["accepted_at"], rows[-1]["action_id"]) if more else None
        return HistoryPage([_action(r) for r in rows], [_correction(r) for r in fixes], last)
