"""The broadcaster's lifespan, entered in-process on the real stack (a fresh namespace): once it has
started, what start-up built is out of the cyclic garbage collector's reach (``gc.freeze``), so that
a full collection while fanning out scans only what the clients and changes left (issue 12)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from leaderboard.broadcaster.entrypoints.app import create_app
from leaderboard.broadcaster.settings import BroadcasterSettings
from leaderboard.testkit.testing import Namespace


@pytest.fixture
def namespace(base_env: dict[str, str]) -> Iterator[Namespace]:
    ns = Namespace.create(base_env)
    try:
        yield ns
    finally:
        ns.drop()


async def test_the_started_app_and_its_clients_are_frozen(namespace: Namespace) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    settings = BroadcasterSettings(_env_file=None, ws_allowed_origins=[], **namespace.settings().model_dump())
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            frozen = gc.get_freeze_count()
            assert frozen > 10_000, frozen  # the modules, the app, the hub, the clients
            ports = app.state.ports
            assert not any(o is ports for o in gc.get_objects()), "the ports were not frozen"
    finally:
        gc.unfreeze()
