"""Moved to the dev-only ``leaderboard-testkit`` member; this name stays importable for a while."""

from leaderboard.testkit.testing import *  # noqa: F403
