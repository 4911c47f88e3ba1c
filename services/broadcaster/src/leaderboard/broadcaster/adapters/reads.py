"""Board reads from Redis (the scorer's key layout in ``leaderboard.common.ranking``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from leaderboard.common.ranking import BoardKeys, decode_top, ranked_entries


@dataclass(frozen=True)
class Meta:
    epoch: str
    version: int
    rev: int
    top: list[tuple[str, str]]
    top_known: bool = True  # False between a rebuild and the scorer's first announcement


@dataclass(frozen=True)
class Page:
    meta: Meta
    total: int
    entries: list[dict[str, Any]]


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class BoardReader:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix

    def keys(self, board: str) -> BoardKeys:
        return BoardKeys(self.prefix, board)

    async def meta(self, board: str) -> Meta | None:
        epoch, version, rev, top = await self.redis.hmget(
            self.keys(board).meta, ["epoch", "version", "rev", "top"]
        )
        if epoch is None:
            return None
        return Meta(_text(epoch) or "", int(version or 0), int(rev or 0), decode_top(top), top is not None)

    async def page(self, board: str, offset: int, limit: int, descending: bool) -> Page | None:
        k = self.keys(board)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hmget(k.meta, ["epoch", "version", "rev", "top"])
        pipe.zcard(k.rank)
        if descending:
            pipe.zrange(k.rank, offset, offset + limit - 1)
        else:
            pipe.zrange(k.rank, -(offset + limit), -(offset + 1) if offset else -1)
        (epoch, version, rev, top), total, members = await pipe.execute()
        if epoch is None:
            return None
        if not descending:
            members = list(reversed(members))
            start_rank, step = int(total) - offset, -1
        else:
            start_rank, step = offset + 1, 1
        entries = await self._entries(k, members, start_rank, step)
        return Page(
            Meta(_text(epoch) or "", int(version or 0), int(rev or 0), decode_top(top)), int(total), entries
        )

    async def _entries(
        self, k: BoardKeys, members: list[bytes], start_rank: int, step: int = 1
    ) -> list[dict[str, Any]]:
        if not members:
            return []
        uids = [m.decode().rsplit(":", 1)[1] for m in members]
        names = await self.redis.hmget(k.names, uids)
        pairs = [(m.decode(), _text(n)) for m, n in zip(members, names, strict=True)]
        return [e.model_dump(mode="json", by_alias=True) for e in ranked_entries(pairs, start_rank, step)]

    async def around(
        self, board: str, user_id: str, n: int
    ) -> tuple[Meta, dict[str, Any], list[dict[str, Any]]] | None:
        k = self.keys(board)
        meta = await self.meta(board)
        if meta is None:
            return None
        member = await self.redis.hget(k.members, user_id)
        if member is None:
            return None
        found = await self.redis.zrank(k.rank, member)
        if found is None:  # moved between the two reads; the caller may retry
            return None
        rank = int(found)  # type: ignore[arg-type]
        start = max(0, rank - n)
        members: list[bytes] = await self.redis.zrange(k.rank, start, rank + n)  # type: ignore[assignment]
        entries = await self._entries(k, members, start + 1)
        me = next((e for e in entries if e["userId"] == user_id), None)
        if me is None:  # moved between the reads; the caller retries
            return None
        return meta, me, [e for e in entries if e["userId"] != user_id]

    def top_entries(self, meta: Meta) -> list[dict[str, Any]]:
        return [e.model_dump(mode="json", by_alias=True) for e in ranked_entries(meta.top)]
