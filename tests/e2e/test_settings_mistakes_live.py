"""A settings mistake stops each service at start with exit code 2 and pydantic's message alone (no
traceback), through the real command; the broadcaster's own case is in its integration tests."""

from __future__ import annotations

import os
import subprocess

import pytest

from leaderboard.testkit.services import leaderboard_cmd


@pytest.mark.parametrize(
    ("service", "variable", "field"),
    [
        ("ingest", "LEADERBOARD_HTTP_KEEP_ALIVE_S", "http_keep_alive_s"),
        ("scorer", "LEADERBOARD_BATCH_SIZE", "batch_size"),
        ("broadcaster", "LEADERBOARD_HTTP_KEEP_ALIVE_S", "http_keep_alive_s"),
    ],
)
def test_an_unparsable_setting_exits_2_naming_it(
    base_env: dict[str, str], service: str, variable: str, field: str
) -> None:
    env = {**os.environ, **base_env, variable: "not-a-number", "LEADERBOARD_WS_ALLOWED_ORIGINS": "[]"}
    done = subprocess.run(leaderboard_cmd(service), env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"leaderboard {service}: invalid settings" in done.stderr and field in done.stderr
    assert "Traceback" not in done.stderr
