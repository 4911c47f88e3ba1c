"""Exact ranking keys shared by the writer (scorer) and the readers (broadcaster, CLI).

Order: score descending, then the time the user reached that score ascending (from the event's
``acceptedAt``, so a replay reproduces it), then userId ascending. A double cannot hold a 63-bit
score and a millisecond timestamp, so Redis keeps the board as a sorted set whose members all have
score 0 and sort lexicographically by a fixed-width key::

    (2**63 - 1 - score) as 19 digits : reachedAt epoch-ms as 13 digits : userId

Limits: scores 0 .. 2**63-1 (Postgres bigint), times 1970 .. 2286. Postgres orders the same way with
``ORDER BY score DESC, reached_at ASC, user_id ASC`` (uuid compares as its lowercase hex).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

from leaderboard.common.events import RankedEntry

MAX_SCORE = 2**63 - 1
MAX_MS = 10**13 - 1


@dataclass(frozen=True, order=True)
class RankKey:
    score: int
    reached_ms: int
    user_id: str

    def member(self) -> str:
        if not 0 <= self.score <= MAX_SCORE:
            raise ValueError(f"score {self.score} outside 0..2**63-1")
        if not 0 <= self.reached_ms <= MAX_MS:
            raise ValueError(f"reached time {self.reached_ms} outside the 13-digit range")
        return f"{MAX_SCORE - self.score:019d}:{self.reached_ms:013d}:{self.user_id}"

    @classmethod
    def parse(cls, member: str | bytes) -> RankKey:
        text = member.decode() if isinstance(member, bytes) else member
        inv, reached, user = text.split(":", 2)
        return cls(score=MAX_SCORE - int(inv), reached_ms=int(reached), user_id=user)


def sort_key(score: int, reached_ms: int, user_id: UUID | str) -> tuple[int, int, str]:
    """Python sort key giving the board order (ascending = best first)."""
    return (-score, reached_ms, str(user_id))


@dataclass(frozen=True)
class BoardKeys:
    """Redis key layout of one board."""

    prefix: str
    board: str

    @property
    def rank(self) -> str:
        return f"{self.prefix}:board:{self.board}:rank"

    @property
    def members(self) -> str:
        return f"{self.prefix}:board:{self.board}:member"

    @property
    def names(self) -> str:
        return f"{self.prefix}:board:{self.board}:names"

    @property
    def meta(self) -> str:
        return f"{self.prefix}:board:{self.board}:meta"


GLOBAL_BOARD = "global"


def decode_top(encoded: str | bytes | None) -> list[tuple[str, str]]:
    """The meta hash's ``top`` field, written by the scorer's script: a flat JSON list
    ``[member, username, member, username, ...]`` -> ``[(member, username), ...]``."""
    if not encoded:
        return []
    flat = json.loads(encoded)
    if isinstance(flat, dict):  # Lua's cjson encodes an empty table as {}
        return []
    return list(zip(flat[0::2], flat[1::2], strict=True))


def ranked_entries(
    pairs: Sequence[tuple[str | bytes, str | bytes | None]], start_rank: int = 1, step: int = 1
) -> list[RankedEntry]:
    """(member, username) pairs in board order -> REST/WebSocket entries with ranks."""
    out = []
    for i, (member, name) in enumerate(pairs):
        key = RankKey.parse(member)
        username = name.decode() if isinstance(name, bytes) else name
        out.append(
            RankedEntry(
                rank=start_rank + i * step,
                user_id=UUID(key.user_id),
                username=username or key.user_id[:8],
                score=key.score,
            )
        )
    return out
