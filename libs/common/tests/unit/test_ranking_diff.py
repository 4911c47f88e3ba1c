"""The one rank diff (``leaderboard.common.ranking.changed_entries``): the scorer runs it on
RankedEntry tops for ``BoardChanged.changed``, the broadcaster on the JSON tops it sends a client."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from leaderboard.common.events import RankedEntry
from leaderboard.common.ranking import changed_entries


def entry(rank: int, user: uuid.UUID, score: int, name: str = "n") -> RankedEntry:
    return RankedEntry(rank=rank, user_id=user, username=name, score=score)


def as_json(entries: list[RankedEntry]) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json", by_alias=True) for e in entries]


def test_moves_score_changes_renames_entries_and_exits() -> None:
    a, b, c, d, e, f = (uuid.uuid4() for _ in range(6))
    old = [entry(1, a, 100), entry(2, b, 90), entry(3, c, 80), entry(4, e, 70), entry(5, f, 60)]
    new = [entry(1, b, 110), entry(2, a, 100), entry(3, c, 80, "renamed"), entry(4, d, 75), entry(5, f, 60)]
    # entered or changed in the new top's order, then those that left
    assert changed_entries(old, new) == [b, a, c, d, e]
    assert changed_entries(old, old) == []
    assert changed_entries([], [entry(1, a, 1)]) == [a]
    assert changed_entries([entry(1, a, 1)], []) == [a]


def test_json_entries_give_the_user_id_strings() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    old, new = [entry(1, a, 10)], [entry(1, b, 20), entry(2, a, 10)]
    assert changed_entries(as_json(old), as_json(new)) == [str(b), str(a)]


def _broadcaster_diff(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    """The broadcaster's hub.diff as it was written before it used the shared function."""
    before = {e["userId"]: (e["rank"], e["score"], e["username"]) for e in old}
    after = {e["userId"]: (e["rank"], e["score"], e["username"]) for e in new}
    return [u for u, s in after.items() if before.get(u) != s] + [u for u in before if u not in after]


users = [uuid.UUID(int=i) for i in range(6)]
tops = st.lists(
    st.tuples(st.sampled_from(users), st.integers(0, 3), st.sampled_from(["x", "y"])),
    max_size=6,
    unique_by=lambda t: t[0],
).map(lambda rows: [entry(i + 1, u, s, n) for i, (u, s, n) in enumerate(rows)])


@given(tops, tops)
def test_both_forms_agree_with_each_other_and_with_the_broadcasters_old_diff(
    old: list[RankedEntry], new: list[RankedEntry]
) -> None:
    from_models = changed_entries(old, new)
    from_json = changed_entries(as_json(old), as_json(new))
    assert [str(u) for u in from_models] == from_json == _broadcaster_diff(as_json(old), as_json(new))
