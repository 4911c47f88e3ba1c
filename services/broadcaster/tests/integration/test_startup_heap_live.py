"""The broadcaster's lifespan, entered in-process on the real stack (a fresh namespace): once it has
started, what start-up built is out of the cyclic garbage collector's reach (``gc.freeze``), so that
a full collection while fanning out scans only what the clients and changes left (issue 12)."""

from __future__ import annotations

import gc

from leaderboard.broadcaster.entrypoints.app import create_app
from leaderboard.broadcaster.settings import BroadcasterSettings
from leaderboard.testkit.testing import Namespace, started_from_unfrozen_heap


async def test_the_started_app_and_its_clients_are_frozen(fresh_namespace: Namespace) -> None:
    given = fresh_namespace.settings().model_dump()
    settings = BroadcasterSettings(_env_file=None, ws_allowed_origins=[], **given)
    async with started_from_unfrozen_heap(create_app(settings)) as app:
        frozen = gc.get_freeze_count()
        assert frozen > 10_000, frozen  # the modules, the app, the hub, the clients
        ports = app.state.ports
        assert not any(o is ports for o in gc.get_objects()), "the ports were not frozen"
