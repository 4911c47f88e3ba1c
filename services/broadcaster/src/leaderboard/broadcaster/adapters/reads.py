"""Board reads from Redis (the scorer's key layout in ``leaderboard.common.boardkeys``), one board and
period at a time (``period``: the period id, ``"all"`` for an all-time board).

Each read is one round trip and atomic, a Lua script: :data:`PAGE_SCRIPT` (the meta, the count, the
page's members, their names and the count of entries with a strictly better score than the page's
best, for its shared ranks), :data:`AROUND_SCRIPT` (a user and its neighbours) and
:data:`RANKS_SCRIPT` (a list of users with their ranks). Entries are built straight from the rank
members (:func:`page_entries`), without a pydantic model per entry: the same JSON, a fraction of the
CPU. "Strictly better" is a ZLEXCOUNT up to the first member of that score: a member starts with its
fixed-width score head, so every member with a better score sorts before ``{head}:``.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template
from typing import Any
from uuid import UUID

from redis.asyncio import Redis

from leaderboard.broadcaster.domain import with_shared_ranks
from leaderboard.common.boardkeys import ALL_PERIOD, LUA, MEMBER_USER_OFFSET, SCORE_DIGITS, BoardKeys
from leaderboard.common.ranking import MAX_SCORE, decode_top, ranked_entries

_LUA = {**LUA, "score_digits": SCORE_DIGITS}
_BETTER = """
local function better(m)
  return redis.call('ZLEXCOUNT', KEYS[2], '-', '(' .. string.sub(m, 1, $score_digits) .. ':')
end
"""

# KEYS: meta, rank, names. ARGV: start, stop (ZRANGE indexes). -> nil when the board has no meta,
# else {epoch, version, rev, total, members, names, better}.
PAGE_SCRIPT = Template(
    _BETTER
    + """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'version', 'rev')
if not meta[1] then return nil end
local members = redis.call('ZRANGE', KEYS[2], ARGV[1], ARGV[2])
local names = {}
local ahead = 0
if #members > 0 then
  local uids = {}
  for i, m in ipairs(members) do uids[i] = string.sub(m, $member_user_start) end
  names = redis.call('HMGET', KEYS[3], unpack(uids))
  ahead = better(members[1])
end
return {meta[1], meta[2] or '0', meta[3] or '0', redis.call('ZCARD', KEYS[2]), members, names, ahead}
"""
).substitute(_LUA)

# KEYS: meta, rank, names, member. ARGV: userId, n. -> nil (no meta), {'NOUSER'}, or
# {epoch, version, rev, start (0-based), members, names, better}.
AROUND_SCRIPT = Template(
    _BETTER
    + """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'version', 'rev')
if not meta[1] then return nil end
local member = redis.call('HGET', KEYS[4], ARGV[1])
if not member then return {'NOUSER'} end
local rank = redis.call('ZRANK', KEYS[2], member)
if not rank then return {'NOUSER'} end
local n = tonumber(ARGV[2])
local start = rank - n
if start < 0 then start = 0 end
local members = redis.call('ZRANGE', KEYS[2], start, rank + n)
local uids = {}
for i, m in ipairs(members) do uids[i] = string.sub(m, $member_user_start) end
local names = redis.call('HMGET', KEYS[3], unpack(uids))
return {meta[1], meta[2] or '0', meta[3] or '0', start, members, names, better(members[1])}
"""
).substitute(_LUA)

# KEYS: meta, rank, names, member. ARGV: userIds. -> nil (no meta), else {epoch, version, rev, total,
# found}: found is flat, {member, name, rank (0-based), better, ...} for the users on the board.
RANKS_SCRIPT = Template(
    _BETTER
    + """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'version', 'rev')
if not meta[1] then return nil end
local found = {}
for _, uid in ipairs(ARGV) do
  local member = redis.call('HGET', KEYS[4], uid)
  local rank = member and redis.call('ZRANK', KEYS[2], member)
  if rank then
    found[#found + 1] = member
    found[#found + 1] = redis.call('HGET', KEYS[3], uid) or false
    found[#found + 1] = rank
    found[#found + 1] = better(member)
  end
end
return {meta[1], meta[2] or '0', meta[3] or '0', redis.call('ZCARD', KEYS[2]), found}
"""
).substitute(_LUA)


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
    archived: bool = False  # read from Postgres (a period Redis no longer holds)


@dataclass(frozen=True)
class Around:
    meta: Meta
    me: dict[str, Any]
    neighbours: list[dict[str, Any]]


NOT_RANKED = "not-ranked"  # around(): the board exists, the user has no entry on it


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _meta(epoch: Any, version: Any, rev: Any) -> Meta:
    return Meta(_text(epoch) or "", int(version), int(rev), [])


class BoardReader:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix
        self._page_script = redis.register_script(PAGE_SCRIPT)
        self._around_script = redis.register_script(AROUND_SCRIPT)
        self._ranks_script = redis.register_script(RANKS_SCRIPT)

    def keys(self, board: str, period: str = ALL_PERIOD) -> BoardKeys:
        return BoardKeys.of(self.prefix, board, period)

    async def meta(self, board: str, period: str = ALL_PERIOD) -> Meta | None:
        epoch, version, rev, top = await self.redis.hmget(
            self.keys(board, period).meta, ["epoch", "version", "rev", "top"]
        )
        if epoch is None:
            return None
        return Meta(_text(epoch) or "", int(version or 0), int(rev or 0), decode_top(top), top is not None)

    async def state(self, board: str, period: str = ALL_PERIOD) -> tuple[str, int] | None:
        """The board's (epoch, rev), which names every state of it (``rev`` rises with each write, a
        rebuild starts a new epoch); None without a board. One small HMGET, for caches of its reads."""
        epoch, rev = await self.redis.hmget(self.keys(board, period).meta, ["epoch", "rev"])
        return None if epoch is None else (_text(epoch) or "", int(rev or 0))

    async def current_period(self, board: str) -> str | None:
        """The period the scorer opened last for a windowed board (its ``current-period`` key)."""
        return _text(await self.redis.get(BoardKeys(self.prefix, board).current_period))

    async def page(
        self,
        board: str,
        offset: int,
        limit: int,
        descending: bool,
        period: str = ALL_PERIOD,
        ascending: bool = False,
    ) -> Page | None:
        """A page in board order (``descending``: best first) or reversed; ``ascending``: the board's
        order is ``asc`` (its members hold the score itself)."""
        k = self.keys(board, period)
        if descending:
            start, stop = offset, offset + limit - 1
        else:
            start, stop = -(offset + limit), -(offset + 1) if offset else -1
        found = await self._page_script(keys=[k.meta, k.rank, k.names], args=[start, stop])
        if found is None:
            return None
        epoch, version, rev, total, members, names, better = found
        if not descending:
            members, names = list(reversed(members)), list(reversed(names))
            start_rank, step = int(total) - offset, -1
        else:
            start_rank, step = offset + 1, 1
        entries = page_entries(members, names, start_rank, step, ascending)
        return Page(_meta(epoch, version, rev), int(total), with_shared_ranks(entries, int(better)))

    async def around(
        self, board: str, user_id: str, n: int, period: str = ALL_PERIOD, ascending: bool = False
    ) -> Around | str | None:
        """The user's entry and up to ``n`` neighbours either side; None when the board has no meta,
        :data:`NOT_RANKED` when the user has no entry."""
        k = self.keys(board, period)
        found = await self._around_script(keys=[k.meta, k.rank, k.names, k.members], args=[user_id, n])
        if found is None:
            return None
        if len(found) == 1:
            return NOT_RANKED
        epoch, version, rev, start, members, names, better = found
        entries = page_entries(members, names, int(start) + 1, 1, ascending)
        entries = with_shared_ranks(entries, int(better))
        me = next(e for e in entries if e["userId"] == user_id)
        return Around(_meta(epoch, version, rev), me, [e for e in entries if e["userId"] != user_id])

    async def ranks(
        self, board: str, users: list[str], period: str = ALL_PERIOD, ascending: bool = False
    ) -> Page | None:
        """The entries of ``users`` who are on the board, in board order, each with its rank and shared
        rank; None when the board has no meta."""
        k = self.keys(board, period)
        found = await self._ranks_script(keys=[k.meta, k.rank, k.names, k.members], args=users)
        if found is None:
            return None
        epoch, version, rev, total, flat = found
        rows = sorted(zip(flat[0::4], flat[1::4], flat[2::4], flat[3::4], strict=True))
        entries = []
        for member, name, rank, better in rows:
            entry = page_entries([member], [name or None], int(rank) + 1, 1, ascending)[0]
            entries.append({"rank": entry["rank"], "sharedRank": int(better) + 1, **entry})
        return Page(_meta(epoch, version, rev), int(total), entries)

    def top_entries(self, meta: Meta, ascending: bool = False) -> list[dict[str, Any]]:
        entries = [
            e.model_dump(mode="json", by_alias=True) for e in ranked_entries(meta.top, ascending=ascending)
        ]
        return with_shared_ranks(entries)


def page_entries(
    members: list[bytes],
    names: list[bytes | None],
    start_rank: int,
    step: int = 1,
    ascending: bool = False,
) -> list[dict[str, Any]]:
    """Rank members (and their names) -> the JSON entries ``ranked_entries`` gives, built directly:
    score from the fixed-width head (its complement on a desc board, ``leaderboard.common.ranking``),
    the user id from its fixed offset, the first 8 characters of the id when there is no name."""
    out = []
    for i, (member, name) in enumerate(zip(members, names, strict=True)):
        text = member.decode()
        user = str(UUID(text[MEMBER_USER_OFFSET:]))
        username = name.decode() if name is not None else ""
        head = int(text[:SCORE_DIGITS])
        out.append(
            {
                "rank": start_rank + i * step,
                "userId": user,
                "username": username or text[MEMBER_USER_OFFSET : MEMBER_USER_OFFSET + 8],
                "score": head if ascending else MAX_SCORE - head,
            }
        )
    return out
