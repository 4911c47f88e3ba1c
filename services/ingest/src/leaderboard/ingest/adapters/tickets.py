"""Single-use action tickets and service-event dedupe markers in Redis.

Every check-and-change is one Lua script, so concurrent completions of one ticket serialise in
Redis: exactly one claims it. A claim is *pending* until Kafka acknowledges the event, then *used*;
if Kafka refuses, the claim is released and the ticket can be completed again ("a ticket whose
event Kafka did not acknowledge is not burned"). A pending claim whose holder died lapses after a
lease; completing again then is safe because the scorer dedupes by actionId. Time is Redis's own
clock (TIME), so every ingest replica measures ``min_seconds`` on the same server clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from redis.asyncio import Redis

from leaderboard.ingest.adapters.batching import ScriptBatcher
from leaderboard.ingest.adapters.ratelimit import GCRA, Decision, Limit, decide, limit_args, limit_keys

_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"

ISSUE = (
    _NOW
    + """
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'type', ARGV[2], 'points', ARGV[3], 'issued', now,
           'not_before', now + tonumber(ARGV[4]), 'expires', now + tonumber(ARGV[5]), 'state', 'open')
redis.call('PEXPIREAT', KEYS[1], now + tonumber(ARGV[5]) + tonumber(ARGV[6]))
return {now, now + tonumber(ARGV[4]), now + tonumber(ARGV[5])}
"""
)

# KEYS: ticket. ARGV: user, event id, lease ms, the cap key's prefix (the ticket's type completes
# it), action id, then (type, hourly cap) pairs of the catalog's capped types.
# The cap key is built here from the ticket's own type rather than passed in KEYS: reading the type
# first would cost a round trip per completion. (Like the ticket and cap keys of one claim, which
# live in different hash slots already, this script is for a single Redis, not a cluster.)
CLAIM = (
    _NOW
    + """
local f = redis.call('HMGET', KEYS[1], 'user', 'state', 'event', 'lease', 'expires', 'not_before',
                     'type', 'points', 'issued')
if not f[1] then return {'not_found', ''} end
if f[1] ~= ARGV[1] then return {'forbidden', ''} end
if f[2] == 'used' then return {'used', f[3]} end
if f[2] == 'pending' and tonumber(f[4]) > now then return {'used', f[3]} end
if now > tonumber(f[5]) then return {'expired', ''} end
if now < tonumber(f[6]) then return {'too_fast', tostring(tonumber(f[6]) - now)} end
local cap = 0
for i = 6, #ARGV, 2 do
  if ARGV[i] == f[7] then cap = tonumber(ARGV[i + 1]) end
end
if cap > 0 then
  local capkey = ARGV[4] .. f[7]
  redis.call('ZREMRANGEBYSCORE', capkey, '-inf', now - 3600000)
  if redis.call('ZSCORE', capkey, ARGV[5]) == false and redis.call('ZCARD', capkey) >= cap then
    local oldest = redis.call('ZRANGE', capkey, 0, 0, 'WITHSCORES')
    return {'cap', tostring(tonumber(oldest[2]) + 3600000 - now)}
  end
  redis.call('ZADD', capkey, now, ARGV[5])
  redis.call('PEXPIRE', capkey, 3600000)
end
redis.call('HSET', KEYS[1], 'state', 'pending', 'event', ARGV[2], 'lease', now + tonumber(ARGV[3]))
return {'ok', f[7], f[8], f[9], tostring(now)}
"""
)

# The rate limit and the claim in one round trip (a completion's first two, issue 12). KEYS: the
# limits' keys, then the ticket. ARGV: the number of limits n, GCRA's 2n arguments, then CLAIM's.
# The two scripts run unchanged as local functions (their KEYS and ARGV are the parameters): GCRA
# first, and CLAIM only when it allowed the request, so a refused request charges and claims nothing,
# as when the two were separate calls. Replies GCRA's four values, then CLAIM's when it ran.
CHARGE_AND_CLAIM = (
    "local function gcra(KEYS, ARGV)\n"
    + GCRA
    + "\nend\nlocal function claim(KEYS, ARGV)\n"
    + CLAIM
    + """
end
local n = tonumber(ARGV[1])
local lk, la, ca = {}, {}, {}
for i = 1, n do lk[i] = KEYS[i] la[2 * i - 1] = ARGV[2 * i] la[2 * i] = ARGV[2 * i + 1] end
for i = 2 * n + 2, #ARGV do ca[#ca + 1] = ARGV[i] end
local out = gcra(lk, la)
if tonumber(out[1]) == 0 then return out end
local c = claim({KEYS[n + 1]}, ca)
for i = 1, #c do out[#out + 1] = c[i] end
return out
"""
)

# KEYS: ticket. ARGV: event id, retention ms
CONFIRM = """
if redis.call('HGET', KEYS[1], 'event') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'used')
redis.call('HDEL', KEYS[1], 'lease')
local ttl = redis.call('PTTL', KEYS[1])
if ttl < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""

# KEYS: ticket, cap zset. ARGV: event id, action id
RELEASE = """
local f = redis.call('HMGET', KEYS[1], 'event', 'state')
if f[1] ~= ARGV[1] or f[2] ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'open')
redis.call('HDEL', KEYS[1], 'event', 'lease')
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""

# Service events. KEYS: one marker per actionId. ARGV: owner token, lease ms
CLAIM_MANY = """
local claimed = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then claimed[#claimed + 1] = i end
end
return claimed
"""

# KEYS: markers. ARGV: owner token, new value ('accepted') and its ttl ms, or '' to release
SETTLE_MANY = """
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    if ARGV[2] == '' then redis.call('DEL', key) else redis.call('SET', key, ARGV[2], 'PX', ARGV[3]) end
    n = n + 1
  end
end
return n
"""


@dataclass(frozen=True)
class Issued:
    issued_ms: int
    not_before_ms: int
    expires_ms: int


@dataclass(frozen=True)
class Claim:
    outcome: str
    detail: str = ""
    action_type: str = ""
    points: int = 0
    issued_ms: int = 0
    now_ms: int = 0
    rate: Decision | None = None  # the rate limit's decision, when the claim was charged to one


class TicketStore:
    def __init__(self, redis: Redis, prefix: str, batcher: ScriptBatcher | None = None) -> None:
        self.redis, self.prefix = redis, prefix
        self._issue = redis.register_script(ISSUE)
        self._claim = redis.register_script(CLAIM)
        self._charge_and_claim = redis.register_script(CHARGE_AND_CLAIM)
        self._confirm = redis.register_script(CONFIRM)
        self._release = redis.register_script(RELEASE)
        self._claim_many = redis.register_script(CLAIM_MANY)
        self._settle_many = redis.register_script(SETTLE_MANY)
        # A completion's claim and confirm, and a service batch's claim and settle, go with the other
        # requests' scripts due at the same time.
        self._batched = batcher or ScriptBatcher(redis)

    def _ticket(self, action_id: UUID) -> str:
        return f"{self.prefix}:ticket:{action_id}"

    def _cap(self, user_id: str, action_type: str) -> str:
        return f"{self.prefix}:cap:{user_id}:{action_type}"

    async def issue(
        self,
        action_id: UUID,
        user_id: str,
        action_type: str,
        points: int,
        min_ms: int,
        ttl_ms: int,
        keep_ms: int,
    ) -> Issued:
        now, not_before, expires = await self._issue(
            keys=[self._ticket(action_id)], args=[user_id, action_type, points, min_ms, ttl_ms, keep_ms]
        )
        return Issued(int(now), int(not_before), int(expires))

    async def cap_usage(self, user_id: str, action_type: str, now_ms: int) -> tuple[int, int]:
        """Completions in the rolling hour, and ms until the oldest of them leaves the window."""
        key = self._cap(user_id, action_type)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcount(key, now_ms - 3_600_000, "+inf")
            pipe.zrangebyscore(key, now_ms - 3_600_000, "+inf", start=0, num=1, withscores=True)
            count, oldest = await pipe.execute()
        wait_ms = int(oldest[0][1]) + 3_600_000 - now_ms if oldest else 0
        return int(count), max(0, wait_ms)

    async def claim(
        self,
        action_id: UUID,
        user_id: str,
        event_id: UUID,
        lease_ms: int,
        cap_for: dict[str, int],
        limits: list[Limit] | None = None,
    ) -> Claim:
        """Claim the ticket; with ``limits``, charge them first in the same script (outcome
        ``rate_limited``, nothing claimed, when one is spent; ``rate`` holds the decision)."""
        # One round trip: the script finds the ticket's type, hence its cap and cap key, itself.
        caps = [x for kind, cap in cap_for.items() if cap > 0 for x in (kind, cap)]
        args = [user_id, str(event_id), lease_ms, self._cap(user_id, ""), str(action_id), *caps]
        if not limits:
            return self._claimed(await self._batched.call(self._claim, [self._ticket(action_id)], args))
        reply = await self._batched.call(
            self._charge_and_claim,
            [*limit_keys(self.prefix, limits), self._ticket(action_id)],
            [len(limits), *limit_args(limits), *args],
        )
        rate = decide(reply, limits)
        if not rate.allowed:
            return Claim("rate_limited", rate=rate)
        claim = self._claimed(reply[4:])
        return Claim(
            claim.outcome, claim.detail, claim.action_type, claim.points, claim.issued_ms, claim.now_ms, rate
        )

    @staticmethod
    def _claimed(result: list[bytes | int | str]) -> Claim:
        fields = [r.decode() if isinstance(r, bytes) else str(r) for r in result]
        if fields[0] != "ok":
            return Claim(fields[0], fields[1] if len(fields) > 1 else "")
        return Claim("ok", "", fields[1], int(fields[2]), int(fields[3]), int(fields[4]))

    async def confirm(self, action_id: UUID, event_id: UUID, keep_ms: int) -> None:
        await self._batched.call(self._confirm, [self._ticket(action_id)], [str(event_id), keep_ms])

    async def release(self, action_id: UUID, user_id: str, action_type: str, event_id: UUID) -> None:
        await self._release(
            keys=[self._ticket(action_id), self._cap(user_id, action_type)],
            args=[str(event_id), str(action_id)],
        )

    async def claim_events(self, action_ids: list[str], owner: str, lease_ms: int) -> set[int]:
        """Indices (0-based) of the actionIds (canonical UUID text) this request now owns; the rest
        were seen before."""
        if not action_ids:
            return set()
        marker = f"{self.prefix}:accepted:"
        claimed = await self._batched.call(
            self._claim_many, [marker + a for a in action_ids], [owner, lease_ms]
        )
        return {int(i) - 1 for i in claimed}

    async def settle_events(self, action_ids: list[str], owner: str, *, accepted: bool, keep_ms: int) -> None:
        if action_ids:
            marker = f"{self.prefix}:accepted:"
            await self._batched.call(
                self._settle_many,
                [marker + a for a in action_ids],
                [owner, "accepted" if accepted else "", keep_ms],
            )
