"""GCRA rate limiting in one atomic Redis script, several keys per call (player, service, IP).

Why not a library: ``limits`` offers moving/fixed windows but its async Redis backends pull in a
second client (coredis); GCRA is ~15 lines of Lua, needs one key per limited subject and gives an
exact Retry-After. All keys are checked before any is charged, so a refused request costs nothing.

Failure policy: fail closed. When Redis does not answer, requests get 503 with Retry-After rather
than bypassing the limiter: tickets live in Redis too, so nothing could be accepted safely anyway,
and a limiter that fails open is the first thing an attacker would exploit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from redis.asyncio import Redis

from leaderboard.ingest.adapters.batching import ScriptBatcher

GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local n = #KEYS
local worst_wait, min_remaining, max_reset = 0, 1e18, 0
local tats = {}
for i = 1, n do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - interval * burst
  if now < allow_at then
    if allow_at - now > worst_wait then worst_wait = allow_at - now end
    min_remaining = 0
  else
    local remaining = math.floor((now - allow_at) / interval)
    if remaining < min_remaining then min_remaining = remaining end
  end
  if new_tat - now > max_reset then max_reset = new_tat - now end
  tats[i] = new_tat
end
if worst_wait > 0 then return {0, tostring(worst_wait), 0, tostring(max_reset)} end
for i = 1, n do redis.call('SET', KEYS[i], tostring(tats[i]), 'PX', math.ceil(tats[i] - now) + 1) end
return {1, '0', min_remaining, tostring(max_reset)}
"""


@dataclass(frozen=True)
class Limit:
    key: str
    per_minute: float
    burst: int


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int
    remaining: int
    reset_s: int
    limit: int

    def headers(self) -> dict[str, str]:
        h = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            h["Retry-After"] = str(self.retry_after_s)
        return h


def limit_keys(prefix: str, limits: list[Limit]) -> list[str]:
    """The Redis keys of ``limits``: the ``KEYS`` of :data:`GCRA`."""
    return [f"{prefix}:rl:{lim.key}" for lim in limits]


def limit_args(limits: list[Limit]) -> list[float]:
    """The (interval ms, burst) pairs of ``limits``: the ``ARGV`` of :data:`GCRA`."""
    args: list[float] = []
    for lim in limits:
        args += [60_000.0 / lim.per_minute, float(lim.burst)]
    return args


def decide(reply: list[bytes | int | str], limits: list[Limit]) -> Decision:
    """The decision in :data:`GCRA`'s reply (its first four values)."""
    allowed, wait, remaining, reset = reply[:4]
    return Decision(
        allowed=bool(int(allowed)),
        retry_after_s=max(1, math.ceil(float(wait) / 1000)),
        remaining=int(remaining),
        reset_s=math.ceil(float(reset) / 1000),
        limit=min(lim.burst for lim in limits),
    )


class RateLimiter:
    """Checks go out with the other scripts due at the same time (``batcher``, shared with the ticket
    store in ingest: a service request's check, claim and settle share pipelines with the concurrent
    requests' ones); each check is still its own atomic script."""

    def __init__(self, redis: Redis, prefix: str, batcher: ScriptBatcher | None = None) -> None:
        self.prefix = prefix
        self._script = redis.register_script(GCRA)
        self._batched = batcher or ScriptBatcher(redis)

    async def check(self, limits: list[Limit]) -> Decision:
        reply = await self._batched.call(self._script, limit_keys(self.prefix, limits), limit_args(limits))
        return decide(reply, limits)
