"""The GCRA script and the ticket scripts on the real Redis (the session's, under a fresh key prefix)."""

from __future__ import annotations

import asyncio
import uuid

from redis.asyncio import Redis

from leaderboard.ingest.adapters.ratelimit import Limit, RateLimiter
from leaderboard.ingest.adapters.tickets import TicketStore


async def test_gcra_allows_the_burst_then_refuses_with_retry_after(redis: Redis, prefix: str) -> None:
    limiter = RateLimiter(redis, prefix)
    limit = Limit("user:a", per_minute=6, burst=3)  # one every 10 s after a burst of 3
    decisions = [await limiter.check([limit]) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions[:3]] == [2, 1, 0]
    refused = decisions[3]
    assert 1 <= refused.retry_after_s <= 10 and refused.limit == 3
    assert refused.headers()["Retry-After"] == str(refused.retry_after_s)


async def test_a_refusal_charges_no_key(redis: Redis, prefix: str) -> None:
    limiter = RateLimiter(redis, prefix)
    tight, loose = Limit("user:b", 6, 1), Limit("ip:b", 6, 5)
    assert (await limiter.check([tight, loose])).allowed
    for _ in range(3):
        assert not (await limiter.check([tight, loose])).allowed
    # The loose key was charged once only (by the allowed request): four more fit in its burst.
    assert [(await limiter.check([loose])).allowed for _ in range(5)] == [True, True, True, True, False]


async def test_concurrent_claims_of_one_ticket_serialise(redis: Redis, prefix: str) -> None:
    store = TicketStore(redis, prefix)
    ticket, user = uuid.uuid4(), str(uuid.uuid4())
    await store.issue(ticket, user, "quest", 50, min_ms=0, ttl_ms=60_000, keep_ms=60_000)
    claims = await asyncio.gather(*(store.claim(ticket, user, uuid.uuid4(), 30_000, {}) for _ in range(30)))
    assert sorted(c.outcome for c in claims).count("ok") == 1
    winner = next(c for c in claims if c.outcome == "ok")
    assert winner.action_type == "quest" and winner.points == 50
    assert {c.outcome for c in claims} == {"ok", "used"}


async def test_a_released_claim_can_be_claimed_again_and_a_confirmed_one_cannot(
    redis: Redis, prefix: str
) -> None:
    store = TicketStore(redis, prefix)
    ticket, user = uuid.uuid4(), str(uuid.uuid4())
    await store.issue(ticket, user, "quest", 50, min_ms=0, ttl_ms=60_000, keep_ms=60_000)
    first = uuid.uuid4()
    assert (await store.claim(ticket, user, first, 30_000, {"quest": 5})).outcome == "ok"
    await store.release(ticket, user, "quest", first)  # Kafka refused: not burned, cap not charged
    count, _ = await store.cap_usage(user, "quest", 0)
    assert count == 0
    second = uuid.uuid4()
    assert (await store.claim(ticket, user, second, 30_000, {"quest": 5})).outcome == "ok"
    await store.confirm(ticket, second, 60_000)
    again = await store.claim(ticket, user, uuid.uuid4(), 30_000, {"quest": 5})
    assert (again.outcome, again.detail) == ("used", str(second))
    assert (await store.claim(ticket, str(uuid.uuid4()), uuid.uuid4(), 30_000, {})).outcome == "forbidden"


async def test_unused_tickets_leave_redis_soon_after_expiry_used_ones_are_kept(
    redis: Redis, prefix: str
) -> None:
    store = TicketStore(redis, prefix)
    unused, used, user = uuid.uuid4(), uuid.uuid4(), str(uuid.uuid4())
    for ticket in (unused, used):
        await store.issue(ticket, user, "quest", 50, min_ms=0, ttl_ms=60_000, keep_ms=3_600_000)
    event = uuid.uuid4()
    assert (await store.claim(used, user, event, 30_000, {})).outcome == "ok"
    await store.confirm(used, event, 86_400_000)
    unused_ttl = await redis.pttl(f"{prefix}:ticket:{unused}")
    used_ttl = await redis.pttl(f"{prefix}:ticket:{used}")
    assert 3_600_000 < unused_ttl <= 3_660_000
    assert 86_000_000 < used_ttl <= 86_400_000


async def test_a_claim_charged_to_limits_is_one_script_that_claims_nothing_once_they_are_spent(
    redis: Redis, prefix: str
) -> None:
    store, limiter = TicketStore(redis, prefix), RateLimiter(redis, prefix)
    user = str(uuid.uuid4())
    tight, loose = Limit(f"user:{user}", 6, 2), Limit("ip:c", 6, 5)
    tickets = [uuid.uuid4() for _ in range(3)]
    for t in tickets:
        await store.issue(t, user, "quest", 50, min_ms=0, ttl_ms=60_000, keep_ms=60_000)
    first = await store.claim(tickets[0], user, uuid.uuid4(), 30_000, {"quest": 5}, [tight, loose])
    assert first.outcome == "ok" and first.action_type == "quest" and first.points == 50
    assert first.rate is not None and first.rate.allowed and first.rate.remaining == 1
    # A refused claim (another player's... here: a ticket already used) is charged all the same.
    used = await store.claim(tickets[0], user, uuid.uuid4(), 30_000, {"quest": 5}, [tight, loose])
    assert used.outcome == "used" and used.rate is not None and used.rate.remaining == 0
    spent = await store.claim(tickets[1], user, uuid.uuid4(), 30_000, {"quest": 5}, [tight, loose])
    assert spent.outcome == "rate_limited" and spent.rate is not None and not spent.rate.allowed
    assert spent.rate.headers()["Retry-After"] == str(spent.rate.retry_after_s)
    # Nothing was claimed (the ticket is still open, no cap slot taken) and the loose key was not
    # charged by the refusal: two charges so far, three more fit in its burst.
    assert await redis.hget(f"{prefix}:ticket:{tickets[1]}", "state") == b"open"
    count, _ = await store.cap_usage(user, "quest", 0)
    assert count == 1
    assert [(await limiter.check([loose])).allowed for _ in range(4)] == [True, True, True, False]
