"""The fan-out bench's clients read a frame's version from its bytes (``fanout.frame_version``)
instead of parsing the frame: the version they read must be the frame's own, whatever the entries
carry."""

from __future__ import annotations

import json

import pytest

from leaderboard.broadcaster.hub import BoardState
from leaderboard.cli.bench.fanout import frame_version


def test_reads_the_version_of_a_broadcaster_frame_whose_entries_carry_a_version_of_their_own() -> None:
    top = [
        {
            "rank": 1,
            "sharedRank": 1,
            "userId": "u1",
            "username": 'say "version":7',
            "score": 10,
            "metadata": {"version": 99},
        },
    ]
    state = BoardState("global", "e1", 42, top)
    for text in (state.frame("update", ["u1"]), state.snapshot):
        assert frame_version(text.encode()) == 42 == json.loads(text)["version"]


def test_reads_the_version_of_the_bare_servers_frame() -> None:
    frame = {"type": "update", "board": "g", "epoch": "e", "version": 1234567, "top": [], "changed": []}
    assert frame_version(json.dumps(frame, separators=(",", ":")).encode()) == 1234567


def test_a_frame_without_a_version_is_an_error() -> None:
    with pytest.raises(ValueError, match="without a version"):
        frame_version(b'{"type":"ping"}')
