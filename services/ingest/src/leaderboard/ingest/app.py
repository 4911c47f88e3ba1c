"""Where ``create_app`` has always been importable from (``leaderboard.ingest.main``, tests, images);
the app itself is wired in ``leaderboard.ingest.entrypoints.app``."""

from leaderboard.ingest.entrypoints.app import create_app

__all__ = ["create_app"]
