"""Which partitions each running scorer holds, on its /metrics (``scorer_assigned_partitions``): one
scorer shows every partition of the actions topic; when a second joins the group they show disjoint
shares that cover the topic, each equal to what Faust's own ``/assignment/`` page says, and the first
scorer's ``scorer_consumer_lag`` drops the partitions it gave away."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

import httpx

from leaderboard.common.topics import Topics
from leaderboard.testkit.testing import System

if TYPE_CHECKING:  # pytest imports conftest itself (importlib mode); mypy knows it by path
    from services.scorer.tests.integration.conftest import Kit

# Faust's statistics pages (its /assignment/ view), off by default.
STATS = {"APP_WEB_STATS_ENABLED": "true"}
_GAUGE = r'^{name}\{{partition="(\d+)"\}} ([0-9.e+-]+)$'


async def gauge(system: System, scorer: str, name: str) -> dict[int, float] | None:
    """The partitions a gauge of ``scorer``'s /metrics has a value for (None: no answer)."""
    url = system.specs[scorer].health_url.replace("/readyz", "/metrics")
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(url)).text
    except httpx.HTTPError:
        return None
    return {int(p): float(v) for p, v in re.findall(_GAUGE.format(name=name), text, re.M)}


async def faust_assignment(system: System, scorer: str, topic: str) -> set[int] | None:
    """The actions partitions Faust's assignor gave ``scorer`` (its own web page, independent of ours)."""
    url = system.specs[scorer].health_url.replace("/readyz", "/assignment/")
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            reply = await client.get(url)
    except httpx.HTTPError:
        return None
    return set(reply.json()["actives"].get(topic, [])) if reply.status_code == 200 else None


async def held(system: System, scorer: str) -> set[int] | None:
    shown = await gauge(system, scorer, "scorer_assigned_partitions")
    if shown is None:
        return None
    assert set(shown.values()) <= {1.0}, shown
    return set(shown)


async def test_one_scorer_shows_every_partition_as_assigned(kit: Kit) -> None:
    system = kit.start(**STATS)
    everything = set(range(kit.settings.actions_partitions))
    topic = Topics(kit.settings.topic_prefix).actions
    seen: dict[str, set[int] | None] = {}

    async def all_held() -> bool:
        seen["metric"] = await held(system, "scorer")
        seen["faust"] = await faust_assignment(system, "scorer", topic)
        return seen["metric"] == seen["faust"] == everything

    await kit.eventually(all_held, 60, lambda: f"scorer_assigned_partitions to list {everything} ({seen})")


async def test_a_second_scorer_takes_a_share_and_the_first_drops_its_gauges(kit: Kit) -> None:
    everything = set(range(kit.settings.actions_partitions))
    topic = Topics(kit.settings.topic_prefix).actions
    system = kit.start_scorers(2, **STATS)  # "scorer" now, "scorer-2" below
    # Enough users that every partition gets records, so that the first scorer reports a lag for each.
    users = [uuid.uuid4() for _ in range(200)]
    await kit.produce([kit.action(u) for u in users])

    async def lag_everywhere() -> bool:
        lag = await gauge(system, "scorer", "scorer_consumer_lag")
        return bool(await kit.applied_count() == len(users)) and lag is not None and set(lag) == everything

    await kit.eventually(lag_everywhere, 60, "all applied and a lag reported for every partition")
    assert await held(system, "scorer") == everything

    system.restart("scorer-2")  # starts it: same group
    seen: dict[str, Any] = {}

    async def split() -> bool:
        for name in ("scorer", "scorer-2"):
            seen[name] = await held(system, name)
            seen[f"{name} (faust)"] = await faust_assignment(system, name, topic)
        first, second = seen["scorer"], seen["scorer-2"]
        return (
            bool(first)
            and bool(second)
            and not first & second
            and first | second == everything
            and first == seen["scorer (faust)"]
            and second == seen["scorer-2 (faust)"]
        )

    await kit.eventually(split, 90, lambda: f"both scorers to show a disjoint share of {everything} ({seen})")
    kept = seen["scorer"]
    lag = await gauge(system, "scorer", "scorer_consumer_lag")
    assert lag is not None and set(lag) <= kept, (lag, kept)
