"""Reads of an unchanged board reuse the metadata already read from Postgres; a write (a new rev) or a
rebuild (a new epoch) reads it again."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from leaderboard.broadcaster import service


class CountingArchive:
    def __init__(self, metadata: dict[str, Any]) -> None:
        self.stored = metadata
        self.asked: list[list[str]] = []

    async def metadata(self, board: str, period: str, users: list[str]) -> dict[str, Any]:
        self.asked.append(list(users))
        return {u: self.stored[u] for u in users if u in self.stored}


async def test_metadata_is_read_once_per_board_state() -> None:
    archive = CountingArchive({"a": {"map": "Dust"}, "c": {"lap": 3}})
    ports: Any = SimpleNamespace(archive=archive)
    page = [{"userId": u} for u in ("a", "b", "c")]

    first = await service.with_metadata(ports, "cache-test", "all", page, ("e1", 7))
    again = await service.with_metadata(ports, "cache-test", "all", page[:2], ("e1", 7))
    assert first == [
        {"userId": "a", "metadata": {"map": "Dust"}},
        {"userId": "b"},
        {"userId": "c", "metadata": {"lap": 3}},
    ]
    assert again == first[:2]
    assert archive.asked == [["a", "b", "c"]]  # the second read asked nothing

    archive.stored["b"] = {"map": "Nuke"}
    changed = await service.with_metadata(ports, "cache-test", "all", page[:2], ("e1", 8))
    assert changed[1] == {"userId": "b", "metadata": {"map": "Nuke"}}
    rebuilt = await service.with_metadata(ports, "cache-test", "all", page[:1], ("e2", 8))
    assert rebuilt == first[:1]
    assert archive.asked[1:] == [["a", "b"], ["a"]]

    uncached = await service.with_metadata(ports, "cache-test", "all", page[:1])
    assert uncached == first[:1] and archive.asked[-1] == ["a"]  # no state given: always asks
