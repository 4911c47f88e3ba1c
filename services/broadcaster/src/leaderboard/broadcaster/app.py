"""Where ``leaderboard.broadcaster.main`` (and the image's import check) find ``create_app``; the
app itself lives in ``leaderboard.broadcaster.entrypoints.app``."""

from leaderboard.broadcaster.entrypoints.app import create_app

__all__ = ["create_app"]
