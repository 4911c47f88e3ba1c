"""The WebSocket admission rules: origins, the per-IP counter, the instance cap."""

from __future__ import annotations

import pytest

from leaderboard.broadcaster.errors import OriginRefused, TooManyClients, TooManyFromAddress
from leaderboard.broadcaster.policy import ConnectionCounter, OriginPolicy, check_capacity


@pytest.mark.parametrize(
    "allowed, origin, host, ok",
    [
        (None, "https://evil.example", "b.example", True),  # unset: dev mode, any origin
        (["*"], "https://evil.example", "b.example", True),
        ([], None, "b.example", True),  # no Origin: not a browser
        ([], "http://b.example:8090", "b.example:8090", True),  # its own page
        ([], "https://b.example:8090", "b.example:8090", True),
        ([], "https://evil.example", "b.example", False),
        ([], "http://b.example", None, False),
        (["https://game.example"], "https://game.example", "b.example", True),
        (["https://game.example"], "https://game.example.evil", "b.example", False),
        (["https://game.example"], "http://game.example", "b.example", False),  # scheme matters
    ],
)
def test_origin_policy(allowed: list[str] | None, origin: str | None, host: str | None, ok: bool) -> None:
    policy = OriginPolicy(allowed)
    assert policy.allows(origin, host) is ok
    if ok:
        policy.check(origin, host)
    else:
        with pytest.raises(OriginRefused):
            policy.check(origin, host)


def test_per_ip_counter_caps_each_address_and_frees_slots() -> None:
    counter = ConnectionCounter(2)
    counter.acquire("10.0.0.1")
    counter.acquire("10.0.0.1")
    counter.acquire("10.0.0.2")  # another address has its own slots
    with pytest.raises(TooManyFromAddress) as refused:
        counter.acquire("10.0.0.1")
    assert refused.value.ip == "10.0.0.1" and counter.count("10.0.0.1") == 2  # a refusal holds nothing
    counter.release("10.0.0.1")
    counter.acquire("10.0.0.1")
    for _ in range(2):
        counter.release("10.0.0.1")
    counter.release("10.0.0.2")
    assert len(counter) == 0  # nothing left behind for addresses that went


def test_hold_releases_however_the_block_ends() -> None:
    counter = ConnectionCounter(1)
    with pytest.raises(RuntimeError), counter.hold("10.0.0.1"):
        assert counter.count("10.0.0.1") == 1
        raise RuntimeError("the connection failed")
    assert counter.count("10.0.0.1") == 0 and len(counter) == 0
    with counter.hold("10.0.0.1"), pytest.raises(TooManyFromAddress), counter.hold("10.0.0.1"):
        pass
    assert len(counter) == 0


def test_zero_means_no_cap() -> None:
    counter = ConnectionCounter(0)
    for _ in range(1_000):
        counter.acquire("10.0.0.1")
    assert counter.count("10.0.0.1") == 1_000


def test_instance_capacity() -> None:
    check_capacity(9, 10)
    with pytest.raises(TooManyClients):
        check_capacity(10, 10)
