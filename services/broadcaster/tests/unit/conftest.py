"""Unit fixtures: the broadcaster's real ports built without I/O (nothing connects until used; the
Redis client points at a closed port, so a test that reaches Redis sees it refused at once)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from leaderboard.broadcaster.adapters.changes import ChangeFeed
from leaderboard.broadcaster.adapters.reads import BoardReader
from leaderboard.broadcaster.bootstrap import Ports
from leaderboard.broadcaster.domain import BoardPeriods
from leaderboard.broadcaster.drain import Drain
from leaderboard.broadcaster.hub import Hub
from leaderboard.broadcaster.policy import ConnectionCounter, OriginPolicy
from leaderboard.broadcaster.settings import BroadcasterSettings
from leaderboard.common.auth import TokenVerifier, ensure_dev_keys
from leaderboard.common.boards import BoardCatalog
from leaderboard.common.web import ClientIpResolver

MakePorts = Callable[..., Ports]


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    ensure_dev_keys(tmp_path / "keys")
    return tmp_path / "keys"


@pytest.fixture
async def make_ports(keys_dir: Path) -> AsyncIterator[MakePorts]:
    clients: list[Redis] = []

    def make(verify: bool = True, **settings: Any) -> Ports:
        s = BroadcasterSettings(
            **{"dev_mode": True, "keys_dir": keys_dir, "redis_url": "redis://127.0.0.1:1/0", **settings}
        )
        periods = BoardPeriods(BoardCatalog.load(s.boards_file), s.served_boards())
        s = s.model_copy(update={"boards": list(periods.ids)})  # as bootstrap serves the catalog
        redis = Redis.from_url(s.redis_url, socket_connect_timeout=1)
        clients.append(redis)
        reader = BoardReader(redis, s.redis_prefix)
        hub = Hub(s.history_size, s.send_timeout_s)
        return Ports(
            settings=s,
            redis=redis,
            reader=reader,
            hub=hub,
            feed=ChangeFeed(s, "changes", s.boards, hub, reader, s.reconcile_interval_s, periods),
            verifier=TokenVerifier(s) if verify else None,
            origins=OriginPolicy(s.ws_allowed_origins),
            per_ip=ConnectionCounter(s.ws_max_per_ip),
            client_ip=ClientIpResolver(s.trusted_proxies),
            drain=Drain(s.drain_retry_ms, s.drain_timeout_s),
            periods=periods,
        )

    yield make
    for redis in clients:
        await redis.aclose()
