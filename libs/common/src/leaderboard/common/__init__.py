"""Shared by the leaderboard services: settings, event schemas, auth, ranking keys and client lifecycles.

Nothing here runs on its own; each service composes these pieces in its own bootstrap.
"""
