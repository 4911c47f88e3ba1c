"""Builds the broadcaster's ports (Redis client, Postgres pool, board reader and archive, the boards
and their periods, hub, change feed, token verifier, connection policy, drain) and closes them:
``async with bootstrap(settings) as ports``.

The one place that knows how the parts are wired. The HTTP app enters it in its lifespan; a test or
a tool can enter it without HTTP. The change feed is started here and stopped on exit, after the
Redis client's last use.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from redis.asyncio import Redis

from leaderboard.broadcaster.adapters.archive import Archive
from leaderboard.broadcaster.adapters.changes import ChangeFeed
from leaderboard.broadcaster.adapters.reads import BoardReader
from leaderboard.broadcaster.domain import BoardPeriods
from leaderboard.broadcaster.drain import Drain
from leaderboard.broadcaster.hub import Hub
from leaderboard.broadcaster.policy import ConnectionCounter, OriginPolicy
from leaderboard.broadcaster.settings import BroadcasterSettings
from leaderboard.common.auth import TokenVerifier
from leaderboard.common.boards import BoardCatalog, system_clock
from leaderboard.common.postgres import postgres_pool
from leaderboard.common.redis import redis_client
from leaderboard.common.topics import Topics
from leaderboard.common.web import ClientIpResolver

log = logging.getLogger(__name__)


@dataclass
class Ports:
    settings: BroadcasterSettings
    redis: Redis
    reader: BoardReader
    hub: Hub
    feed: ChangeFeed
    verifier: TokenVerifier | None
    origins: OriginPolicy
    per_ip: ConnectionCounter
    client_ip: ClientIpResolver
    drain: Drain
    periods: BoardPeriods = field(default_factory=BoardPeriods.default)
    archive: Archive | None = None  # None: no Postgres (past periods and metadata unavailable)

    def live_clients(self) -> int:
        """Live clients of every board and transport on this instance."""
        return sum(len(c) for c in self.hub.clients.values())


def token_verifier(settings: BroadcasterSettings) -> TokenVerifier | None:
    """The verifier, or None when no key source is configured and reads are open (then only
    ``/me`` is unavailable); a guarded instance refuses to start without one."""
    try:
        return TokenVerifier(settings)
    except RuntimeError as exc:
        if settings.read_requires_token:
            raise
        log.warning("GET /api/v1/leaderboard/me disabled: %s", exc)
        return None


@contextlib.asynccontextmanager
async def bootstrap(settings: BroadcasterSettings) -> AsyncIterator[Ports]:
    topics = Topics(settings.topic_prefix)
    catalog = BoardCatalog.load(settings.boards_file)
    periods = BoardPeriods(catalog, settings.served_boards(), system_clock(settings.clock_offset_s))
    # Every check of a board name (REST, SSE, the WebSocket handshake) reads ``settings.boards``.
    settings = settings.model_copy(update={"boards": list(periods.ids)})
    async with (
        redis_client(settings) as redis,
        postgres_pool(settings, min_size=0, max_size=settings.postgres_pool_size) as pool,
    ):
        reader = BoardReader(redis, settings.redis_prefix)
        hub = Hub(settings.history_size, settings.send_timeout_s)
        feed = ChangeFeed(
            settings, topics.changes, settings.boards, hub, reader, settings.reconcile_interval_s, periods
        )
        ports = Ports(
            settings=settings,
            redis=redis,
            reader=reader,
            hub=hub,
            feed=feed,
            verifier=token_verifier(settings),
            origins=OriginPolicy(settings.ws_allowed_origins),
            per_ip=ConnectionCounter(settings.ws_max_per_ip),
            client_ip=ClientIpResolver(settings.trusted_proxies),
            drain=Drain(settings.drain_retry_ms, settings.drain_timeout_s),
            periods=periods,
            archive=Archive(pool),
        )
        feed.start()
        try:
            yield ports
        finally:
            await feed.stop()
