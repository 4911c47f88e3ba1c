"""Moved to the dev-only ``leaderboard-testkit`` member; this name stays importable for a while."""

from leaderboard.testkit.services import *  # noqa: F403
