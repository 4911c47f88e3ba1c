"""Ingest's lifespan, entered in-process on the real stack (a fresh namespace): once it has started,
what start-up built is out of the cyclic garbage collector's reach (``gc.freeze``), so that a full
collection under load scans only what requests left (issue 12)."""

from __future__ import annotations

import gc

from leaderboard.ingest.entrypoints.app import create_app
from leaderboard.ingest.settings import IngestSettings
from leaderboard.testkit.testing import Namespace, started_from_unfrozen_heap


async def test_the_started_app_and_its_clients_are_frozen(fresh_namespace: Namespace) -> None:
    settings = IngestSettings(_env_file=None, **fresh_namespace.settings().model_dump())
    async with started_from_unfrozen_heap(create_app(settings)) as app:
        frozen = gc.get_freeze_count()
        # The modules, the app and the clients the lifespan built: tens of thousands of objects.
        assert frozen > 10_000, frozen
        ports = app.state.ports
        # What the lifespan built is among them: a collection would not even look at it.
        before = len(gc.get_objects())
        assert not any(o is ports for o in gc.get_objects()), "the ports were not frozen"
        assert len(gc.get_objects()) < before + 1_000
