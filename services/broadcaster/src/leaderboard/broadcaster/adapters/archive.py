"""Board reads from Postgres: past periods Redis no longer holds, and the entries' metadata.

The scorer keeps every board, period and user in ``board_entries`` (issue 10), in the board order
``ORDER BY rank_key, reached_at, user_id`` (``rank_key`` is ``-score`` on a desc board, the score on an
asc one); names come from ``users``, the period's epoch and last announced version from ``boards``.
Shared ranks are ``rank() OVER (ORDER BY rank_key)``: standard competition ranking, as Redis reads
compute them. Redis does not hold entry metadata (the scorer keeps it in Postgres only), so a read
served from Redis takes its entries' metadata from here, by primary key (:meth:`Archive.metadata`).

The pool is created without connections (``min_size=0``): the broadcaster starts and serves the
current periods from Redis while Postgres is down; only archive reads and metadata need it.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from leaderboard.broadcaster.adapters.reads import Meta, Page

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
