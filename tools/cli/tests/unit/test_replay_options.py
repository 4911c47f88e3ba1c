"""``leaderboard replay`` and ``board --at`` without services: the side-by-side target is a separate
schema and key prefix (never the live ones), the comparison names every difference, bad options are
usage errors, and the board at a moment renders as table, JSON and CSV."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from leaderboard.cli.history import render
from leaderboard.cli.main import cli
from leaderboard.cli.replay import differences, side_settings
from leaderboard.common.history import BoardAt, StandingEntry
from leaderboard.scorer.settings import ScorerSettings


def test_a_side_replay_has_its_own_schema_and_prefix() -> None:
    live = ScorerSettings(_env_file=None, redis_prefix="lb")
    side = side_settings(live, "side")
    assert (side.postgres_schema, side.redis_prefix) == ("side", "lb.side")
    assert (live.postgres_schema, live.redis_prefix) == (None, "lb")
    for bad in ("public", "Side", "1x", "a-b", "x" * 41, 'x"; drop'):
        with pytest.raises(ValueError):
            side_settings(live, bad)


def test_differences_name_board_period_user_score_and_rank() -> None:
    u = str(uuid.UUID(int=1))
    live = {("global", "all", u): (10, 1), ("daily", "2026-11-23", u): (10, 1)}
    side = {("global", "all", u): (12, 1)}
    assert differences(live, dict(live), "postgres") == []
    assert differences(live, side, "redis") == [
        f"redis daily/2026-11-23 {u}: live score 10 rank 1, side absent",
        f"redis global/all {u}: live score 10 rank 1, side score 12 rank 1",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "--compare"], "--compare needs --into NAME"),
        (["replay", "--from-offset", "3", "--from-time", "2026-11-23"], "not both"),
        (["replay", "--from-time", "yesterday"], "--from-time must be ISO-8601"),
        (["replay", "--into", "Bad-Name"], "a side name is"),
        (["board", "--at", "soon"], "--at must be ISO-8601"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output


def test_a_board_at_a_moment_renders_as_table_json_and_csv() -> None:
    a, b = str(uuid.UUID(int=1)), str(uuid.UUID(int=2))
    at = datetime(2026, 11, 23, 12, tzinfo=UTC)
    result = BoardAt(
        "global",
        "all",
        at,
        [
            StandingEntry(1, a, 80, 1_763_892_000_000, None, None),
            StandingEntry(2, b, 70, 1_763_892_000_001, None, None),
        ],
    )
    body = json.loads(render(result, {a: "ada"}, 10, "json"))
    assert body["at"] == "2026-11-23T12:00:00.000Z" and body["total"] == 2
    assert [(e["rank"], e["username"], e["score"]) for e in body["leaderboard"]] == [
        (1, "ada", 80),
        (2, b[:8], 70),
    ]
    assert render(result, {a: "ada"}, 1, "csv").splitlines() == [
        "rank,userId,username,score,reachedAt",
        f"1,{a},ada,80,2025-11-23T10:00:00.000Z",
    ]
    assert "players 2" in render(result, {}, 10, "table").splitlines()[0]
