"""Fault injection at each dangerous moment of a batch: the scorer exits hard (``os._exit``, no
clean-up, no offset commit) after fetching a batch, after the Postgres commit, after the Redis write
and just before the offset commit. A restarted scorer gets the batch again, must see the repeats as
duplicates (proof that it *was* redelivered), and count every action exactly once in both stores.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from leaderboard.common.events import BoardChanged

if TYPE_CHECKING:  # pytest imports conftest itself (importlib mode); mypy knows it by path
    from services.scorer.tests.integration.conftest import Kit

T0 = datetime(2025, 5, 1, 9, 0, tzinfo=UTC)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_fetch", "after_postgres", "after_redis", "before_commit"])
async def test_a_hard_exit_at_each_point_redelivers_and_counts_once(
    kit: Kit, tmp_path: Any, point: str
) -> None:
    marker = tmp_path / f"fault-{point}"
    env = {
        "LEADERBOARD_FAULT_POINT": point,
        "LEADERBOARD_FAULT_MARKER": str(marker),
        "LEADERBOARD_FAULT_AFTER_BATCHES": "1",  # the first batch goes through, the second one dies
    }
    if point == "after_fetch":
        # Nothing of the dying batch is applied yet, so its redelivery alone shows no repeats; with
        # no periodic offset commit, the batch before it (applied, uncommitted) is redelivered too.
        env["LEADERBOARD_COMMIT_INTERVAL_S"] = "3600"
    system = kit.start(**env)
    users = [uuid.uuid4() for _ in range(30)]
    first = kit.action(users[0], 7, accepted_at=T0)
    await kit.produce([first])  # batch 1: one event, applied normally

    async def first_applied() -> bool:
        return bool(await kit.applied_count() == 1)

    await kit.eventually(first_applied, 60, "the first batch")
    rest = [
        kit.action(u, 1 + (i * 7) % 40, accepted_at=T0 + timedelta(milliseconds=10 * i))
        for i, u in enumerate(users * 4)
    ]
    await kit.produce(rest)  # batch 2 is (part of) these: the scorer dies at `point`

    run = system.supervisor.running["scorer"]

    async def died() -> bool:
        return run.proc.poll() is not None

    await kit.eventually(died, 60, f"the scorer to exit at {point}")
    assert marker.read_text() == point
    assert run.proc.returncode == 70
    applied_at_crash = await kit.applied_count()
    if point == "after_fetch":
        assert applied_at_crash == 1  # the dying batch reached neither store
    else:
        assert applied_at_crash > 1  # the dying batch is in Postgres, its offsets are not committed

    system.restart("scorer")  # same group, marker present: no second fault
    expected: dict[str, int] = {}
    for e in [first, *rest]:
        expected[str(e.user_id)] = expected.get(str(e.user_id), 0) + e.points

    # The dying batch (everything applied after the first event) comes back once more; for after_fetch,
    # with no offset committed, the first event does. The restarted process's own counters tell.
    redelivered = 1 if point == "after_fetch" else applied_at_crash - 1

    async def seen_again() -> bool:
        return (await kit.metrics(system)).get("duplicate", 0) >= redelivered

    # After the Postgres commit the stores may already be complete: wait for the redelivery itself.
    await kit.eventually(seen_again, 90, f"{redelivered} redelivered events seen as duplicates")

    async def converged() -> bool:
        return bool(
            await kit.applied_count() == 1 + len(rest)
            and dict(await kit.redis_board()) == expected
            and dict(await kit.pg_board()) == expected
            # counted after the batch's last step, so it may trail the stores by a moment
            and (await kit.metrics(system)).get("applied", 0) >= 1 + len(rest) - applied_at_crash
        )

    await kit.eventually(converged, 90, "both stores to hold every action once")
    assert await kit.pg_board() == await kit.redis_board()  # same order, ties included
    metrics = await kit.metrics(system)
    assert metrics["duplicate"] >= redelivered > 0, metrics
    assert metrics["applied"] == 1 + len(rest) - applied_at_crash  # nothing applied twice

    # The board announcements kept rising, and the last one is the final top (a crash after the Redis
    # write but before the announcement is made good by the restarted scorer).
    changes = [BoardChanged.model_validate_json(raw) for raw in await kit.read_topic(kit.topics.changes)]
    versions = [c.version for c in changes]
    assert versions and versions == sorted(versions)
    meta = await kit.redis_meta()
    assert versions[-1] == int(meta["version"])
    top = [(str(e.user_id), e.score) for e in changes[-1].top]
    assert top == (await kit.redis_board())[: len(top)]
    assert json.loads(meta["top"])
    # Every board counted each action once too (issue 10): the day and the ISO week of T0.
    counts = await kit.check_all_boards()
    assert counts == {("global", "all"): 30, ("daily", "2025-05-01"): 30, ("weekly", "2025-W18"): 30}
