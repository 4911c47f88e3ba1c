"""The Redis board of one board and period: absolute scores in, top-N change detection out, rebuild
from Postgres.

Layout (``leaderboard.common.boardkeys``, which also gives the script the rank member's layout): a
zero-score sorted set of exact rank keys, a hash
userId -> current key, a hash of names, a hash of applied versions and a meta hash
(epoch, version, top, rev). One Lua script applies a batch of absolute scores *and* compares the
top N, so the version it hands out always matches the top it returns, however many scorer
replicas write at once. A user's entry only moves to a newer Postgres version, so a late write
from a replica that lost its partition cannot roll a score back. An empty member removes the user
(a correction voided every action that fed the entry, issue 11).

A past period's keys carry an expiry (``expire_at``: when the period leaves the board's ``keep``),
set again by every write and rebuild, since a key that a write creates again has none.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from string import Template

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from leaderboard.common.boardkeys import ALL_PERIOD, LUA, BoardKeys
from leaderboard.common.ranking import decode_top
from leaderboard.scorer.domain import EntryRow, ScoreRow, TopChange

APPLY = Template("""
local meta = KEYS[4]
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then return {'NOEPOCH'} end
local topn = tonumber(ARGV[1])
local expire_at = tonumber(ARGV[2])
local touched = 0
for i = 3, #ARGV, 4 do
  local uid, ver, member, name = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local cur = tonumber(redis.call('HGET', KEYS[5], uid) or '-1')
  if member == '' then
    -- a removal (every action of the user here was voided): drop the member and its version, so
    -- that a restore recreating the entry at version 1 is taken
    local old = redis.call('HGET', KEYS[2], uid)
    if old then
      redis.call('ZREM', KEYS[1], old)
      redis.call('HDEL', KEYS[2], uid)
      redis.call('HDEL', KEYS[3], uid)
      redis.call('HDEL', KEYS[5], uid)
      touched = touched + 1
    end
  elseif ver > cur then
    local old = redis.call('HGET', KEYS[2], uid)
    if old then redis.call('ZREM', KEYS[1], old) end
    redis.call('ZADD', KEYS[1], 0, member)
    redis.call('HSET', KEYS[2], uid, member)
    redis.call('HSET', KEYS[3], uid, name)
    redis.call('HSET', KEYS[5], uid, ver)
    touched = touched + 1
  end
end
if touched > 0 then redis.call('HINCRBY', meta, 'rev', 1) end
if expire_at > 0 then
  for k = 1, 5 do redis.call('EXPIREAT', KEYS[k], expire_at) end
end
local members = redis.call('ZRANGE', KEYS[1], 0, topn - 1)
local top = {}
for i, m in ipairs(members) do
  local uid = string.sub(m, $member_user_start)
  top[#top + 1] = m
  top[#top + 1] = redis.call('HGET', KEYS[3], uid) or ''
end
local encoded = cjson.encode(top)
local old = redis.call('HGET', meta, 'top') or '[]'
if encoded == old then return {'SAME', epoch, redis.call('HGET', meta, 'version') or '0'} end
local version = redis.call('HINCRBY', meta, 'version', 1)
redis.call('HSET', meta, 'top', encoded)
return {'CHANGED', epoch, tostring(version), old, encoded}
""").substitute(LUA)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NoEpoch(Exception):
    """The board is missing from Redis (flushed or never built): rebuild it from Postgres."""


class RedisBoard:
    def __init__(
        self,
        redis: Redis,
        prefix: str,
        board: str,
        top_n: int,
        period: str = ALL_PERIOD,
        expire_at: int = 0,  # epoch seconds when the period's keys go (0: never)
    ) -> None:
        self.redis = redis
        self.keys = BoardKeys.of(prefix, board, period)
        self.top_n = top_n
        self.expire_at = expire_at
        self._apply = redis.register_script(APPLY)

    def _keys(self) -> list[str]:
        k = self.keys  # KEYS[1..5] of the script
        return [k.rank, k.members, k.names, k.meta, k.versions]

    def _args(self, rows: Sequence[ScoreRow | EntryRow]) -> list[str | int]:
        args: list[str | int] = [self.top_n, self.expire_at]
        for r in rows:
            args += [r.user_id, r.version, r.member(), r.username]
        return args

    async def apply(self, rows: Sequence[ScoreRow | EntryRow]) -> TopChange | None:
        return self.answer(await self._apply(keys=self._keys(), args=self._args(rows)))

    def queue(self, pipe: Pipeline, rows: Sequence[ScoreRow | EntryRow]) -> None:
        """:meth:`apply` queued on a pipeline by the script's SHA (no SCRIPT EXISTS round trip, which
        redis-py's scripts add to every pipeline); the caller reads the reply with :meth:`answer`,
        and falls back to :meth:`apply` when it is an error (the script not loaded yet)."""
        keys = self._keys()
        pipe.evalsha(self._apply.sha, len(keys), *keys, *self._args(rows))

    def answer(self, result: list[bytes | str]) -> TopChange | None:
        """The script's reply: the changed top, None when the top stayed, NoEpoch without a board."""
        status = result[0].decode() if isinstance(result[0], bytes) else result[0]
        if status == "NOEPOCH":
            raise NoEpoch
        if status == "SAME":
            return None
        _, epoch, version, old, new = (x.decode() if isinstance(x, bytes) else str(x) for x in result)
        return TopChange(epoch, int(version), decode_top(old), decode_top(new))

    async def published(self) -> TopChange | None:
        """The board's current epoch, version and top as the script last set them (None if no top)."""
        epoch, version, top = await self.redis.hmget(self.keys.meta, ["epoch", "version", "top"])
        if epoch is None or version is None or top is None:
            return None
        return TopChange(_text(epoch), int(_text(version)), [], decode_top(top))

    async def has_epoch(self) -> bool:
        return bool(await self.redis.hexists(self.keys.meta, "epoch"))

    async def rebuild(self, rows: Sequence[ScoreRow | EntryRow], epoch: str, version: int) -> None:
        """Replace the board with ``rows`` atomically (build aside, then RENAME into place)."""
        tmp = self.keys.rebuild_keys(uuid.uuid4().hex[:8])
        chunk = 5000
        for i in range(0, len(rows), chunk):
            part = rows[i : i + chunk]
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(tmp.rank, {r.member(): 0 for r in part})
            pipe.hset(tmp.members, mapping={r.user_id: r.member() for r in part})
            pipe.hset(tmp.names, mapping={r.user_id: r.username for r in part})
            pipe.hset(tmp.versions, mapping={r.user_id: r.version for r in part})
            await pipe.execute()
        pipe = self.redis.pipeline(transaction=True)
        for src, dst in (
            (tmp.rank, self.keys.rank),
            (tmp.members, self.keys.members),
            (tmp.names, self.keys.names),
            (tmp.versions, self.keys.versions),
        ):
            if rows:
                pipe.rename(src, dst)
            else:
                pipe.delete(dst)
        pipe.delete(self.keys.meta)
        # No "top" yet: the next apply computes it and announces the new epoch.
        pipe.hset(self.keys.meta, mapping={"epoch": epoch, "version": version, "rev": 0})
        if self.expire_at:
            for key in self.keys.data:
                pipe.expireat(key, self.expire_at)
        await pipe.execute()
