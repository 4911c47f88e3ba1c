"""Exact ranking keys shared by the writer (scorer) and the readers (broadcaster, CLI).

Order: score descending, then the time the user reached that score ascending (from the event's
``acceptedAt``, so a replay reproduces it), then userId ascending. A double cannot hold a 63-bit
score and a millisecond timestamp, so Redis keeps the board as a sorted set whose members all have
score 0 and sort lexicographically by a fixed-width key::

    (2**63 - 1 - score) as 19 digits : reachedAt epoch-ms as 13 digits : userId

The key layout of a board in Redis (and the offsets Lua needs) is ``leaderboard.common.boardkeys``;
:class:`BoardKeys` is re-exported here for the callers that import it from this module.

Boards with ``order = "asc"`` (lower is better, issue 10) store the score itself instead of its
complement (``score`` as 19 digits), so the same lexicographic order puts the lowest score first, the
earlier time and the smaller userId still breaking ties; the width (and so the userId's offset) is the
same. A member does not say which order it was written in: readers pass ``ascending`` (the board's
``order`` from ``leaderboard.common.boards``); desc is the default, so the global board's members are
what they always were.

Limits: scores 0 .. 2**63-1 (Postgres bigint), times 1970 .. 2286. Postgres orders the same way with
``ORDER BY score DESC, reached_at ASC, user_id ASC`` (uuid compares as its lowercase hex).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload
from uuid import UUID

from leaderboard.common.boardkeys import DEFAULT_BOARD, MS_DIGITS, SCORE_DIGITS, BoardKeys
from leaderboard.common.events import RankedEntry

__all__ = [
    "DEFAULT_BOARD",
    "GLOBAL_BOARD",
    "MAX_MS",
    "MAX_SCORE",
    "BoardKeys",
    "RankKey",
    "changed_entries",
    "decode_top",
    "ranked_entries",
    "sort_key",
]

MAX_SCORE = 2**63 - 1
MAX_MS = 10**MS_DIGITS - 1


@dataclass(frozen=True, order=True)
class RankKey:
    score: int
    reached_ms: int
    user_id: str
    ascending: bool = field(default=False, compare=False)  # the board's order is "asc"

    def member(self) -> str:
        if not 0 <= self.score <= MAX_SCORE:
            raise ValueError(f"score {self.score} outside 0..2**63-1")
        if not 0 <= self.reached_ms <= MAX_MS:
            raise ValueError(f"reached time {self.reached_ms} outside the 13-digit range")
        head = self.score if self.ascending else MAX_SCORE - self.score
        return f"{head:0{SCORE_DIGITS}d}:{self.reached_ms:0{MS_DIGITS}d}:{self.user_id}"

    @classmethod
    def parse(cls, member: str | bytes, ascending: bool = False) -> RankKey:
        text = member.decode() if isinstance(member, bytes) else member
        head, reached, user = text.split(":", 2)
        score = int(head) if ascending else MAX_SCORE - int(head)
        return cls(score=score, reached_ms=int(reached), user_id=user, ascending=ascending)


def sort_key(
    score: int, reached_ms: int, user_id: UUID | str, ascending: bool = False
) -> tuple[int, int, str]:
    """Python sort key giving the board order (ascending = best first)."""
    return (score if ascending else -score, reached_ms, str(user_id))


GLOBAL_BOARD = DEFAULT_BOARD  # the older name, kept for the callers that use it


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
    pairs: Sequence[tuple[str | bytes, str | bytes | None]],
    start_rank: int = 1,
    step: int = 1,
    ascending: bool = False,
) -> list[RankedEntry]:
    """(member, username) pairs in board order -> REST/WebSocket entries with ranks (``ascending``:
    the members of an ``order = "asc"`` board)."""
    out = []
    for i, (member, name) in enumerate(pairs):
        key = RankKey.parse(member, ascending)
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


# A top as the scorer holds it (RankedEntry) or as readers serve it (the JSON form, camelCase keys).
JsonEntry = Mapping[str, Any]


@overload
def changed_entries(old: Sequence[RankedEntry], new: Sequence[RankedEntry]) -> list[UUID]: ...


@overload
def changed_entries(old: Sequence[JsonEntry], new: Sequence[JsonEntry]) -> list[str]: ...


def changed_entries(
    old: Sequence[RankedEntry] | Sequence[JsonEntry], new: Sequence[RankedEntry] | Sequence[JsonEntry]
) -> list[UUID] | list[str]:
    """The rank diff of two tops: users whose rank, score or name differs, or who entered the top
    (in ``new``'s order), then users who left it (in ``old``'s order). Ids come back as the entries
    hold them: UUIDs from :class:`RankedEntry`, the ``userId`` strings from JSON entries.

    The scorer puts this in ``BoardChanged.changed``; the broadcaster computes it again per client,
    against the top that client last received."""
    before = dict(_entry_state(e) for e in old)
    after = dict(_entry_state(e) for e in new)
    changed = [uid for uid, state in after.items() if before.get(uid) != state]
    changed += [uid for uid in before if uid not in after]
    return changed


def _entry_state(entry: RankedEntry | JsonEntry) -> tuple[Any, tuple[Any, Any, Any]]:
    if isinstance(entry, RankedEntry):
        return entry.user_id, (entry.rank, entry.score, entry.username)
    return entry["userId"], (entry["rank"], entry["score"], entry["username"])
