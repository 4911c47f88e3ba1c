"""The verified-token cache: entries answer only until the token's exp (plus the leeway), the cache
holds at most its size, failures are never cached, and only the exact verified text is served."""

import time
import uuid
from pathlib import Path

import pytest

from leaderboard.common.auth import AuthError, Principal, TokenVerifier, VerifiedTokens, mint_token
from leaderboard.common.settings import CommonSettings


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def who(sub: str = "a") -> Principal:
    return Principal(sub=sub, role="player", name=None, claims={})


def test_an_entry_answers_until_its_deadline_and_not_after() -> None:
    clock = Clock(1000.0)
    cache = VerifiedTokens(10, 300, clock)
    cache.put("t", who(), valid_until=1010.0)
    clock.now = 1009.999
    assert cache.get("t") == who()
    clock.now = 1010.0
    assert cache.get("t") is None
    assert len(cache) == 0  # dropped, not kept


def test_an_entry_lives_at_most_max_age_even_when_the_token_lives_longer() -> None:
    clock = Clock(1000.0)
    cache = VerifiedTokens(10, 300, clock)
    cache.put("t", who(), valid_until=1000.0 + 86400)
    clock.now = 1299.0
    assert cache.get("t") is not None
    clock.now = 1300.0
    assert cache.get("t") is None


def test_the_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    cache = VerifiedTokens(3, 300, Clock(0.0))
    for t in "abc":
        cache.put(t, who(t), valid_until=100.0)
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("d", who("d"), valid_until=100.0)
    assert len(cache) == 3
    assert cache.get("b") is None
    assert [cache.get(t) is not None for t in "acd"] == [True, True, True]


def test_size_zero_caches_nothing() -> None:
    cache = VerifiedTokens(0, 300, Clock(0.0))
    cache.put("t", who(), valid_until=100.0)
    assert cache.get("t") is None and len(cache) == 0


@pytest.fixture
def settings(tmp_path: Path) -> CommonSettings:
    return CommonSettings(keys_dir=tmp_path / "keys", jwt_leeway_s=10)


def test_the_verifier_serves_a_verified_token_from_the_cache_until_exp_plus_leeway(
    settings: CommonSettings,
) -> None:
    token = mint_token(settings, sub=str(uuid.uuid4()), role="player", ttl_s=60)
    clock = Clock(time.time())
    verifier = TokenVerifier(settings, clock=clock)
    first = verifier.verify(token)
    exp = first.claims["exp"]
    clock.now = exp + 9.5  # pyjwt too accepts it until exp + leeway
    assert verifier.verify(token) is first
    clock.now = exp + 10
    assert verifier._cache.get(token) is None
    # The full check runs again (on the real clock the token is still valid) and caches it anew.
    assert verifier.verify(token) == first
    assert len(verifier._cache) == 1


def test_a_token_past_exp_plus_leeway_is_refused_and_not_cached(settings: CommonSettings) -> None:
    now = int(time.time())
    late = {"iat": now - 100, "exp": now - 11}  # leeway 10: refused
    just = {"iat": now - 100, "exp": now - 5}  # within the leeway: accepted, cached for 5 s more
    expired = mint_token(settings, sub=str(uuid.uuid4()), role="player", extra_claims=late)
    verifier = TokenVerifier(settings)
    with pytest.raises(AuthError, match="expired"):
        verifier.verify(expired)
    assert len(verifier._cache) == 0
    ok = mint_token(settings, sub=str(uuid.uuid4()), role="player", extra_claims=just)
    verifier.verify(ok)
    deadline, _ = verifier._cache._entries[ok]
    assert deadline == now - 5 + 10


def test_failures_are_never_cached_and_a_tampered_token_is_not_served(settings: CommonSettings) -> None:
    token = mint_token(settings, sub=str(uuid.uuid4()), role="player")
    verifier = TokenVerifier(settings)
    head, payload, sig = token.split(".")
    tampered = f"{head}.{payload}.{sig[:-4]}{'AAAA' if sig[-4:] != 'AAAA' else 'BBBB'}"
    for _ in range(2):
        with pytest.raises(AuthError):
            verifier.verify(tampered)
    assert len(verifier._cache) == 0
    verifier.verify(token)
    assert len(verifier._cache) == 1
    with pytest.raises(AuthError):
        verifier.verify(tampered)  # the cached original does not answer for a different text
    assert len(verifier._cache) == 1


def test_the_cache_size_is_a_setting(tmp_path: Path) -> None:
    settings = CommonSettings(keys_dir=tmp_path / "keys", jwt_cache_size=0)
    token = mint_token(settings, sub=str(uuid.uuid4()), role="player")
    verifier = TokenVerifier(settings)
    assert verifier.verify(token) == verifier.verify(token)
    assert len(verifier._cache) == 0
