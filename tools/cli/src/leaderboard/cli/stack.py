"""Moved to the dev-only ``leaderboard-testkit`` member; this name stays importable for a while."""

from leaderboard.testkit.stack import *  # noqa: F403
