"""Kept so that ``leaderboard.scorer.app.build_app`` stays importable (the image test imports this
module); the worker lives in ``leaderboard.scorer.entrypoints.worker``, its web routes in
``leaderboard.scorer.entrypoints.web``."""

from __future__ import annotations

from leaderboard.scorer.entrypoints.worker import build_app

__all__ = ["build_app"]
