"""What the worker's pieces share while it runs: the settings, batch progress, the partitions it holds,
the ports once start-up has completed, and the lazily built token verifier. The Faust app carries it
(:class:`ScorerApp`), so the agent, the start-up service, the partition signals and the web views are
module-level code that reads it from there instead of closures over locals of one function."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import faust

from leaderboard.common.auth import TokenVerifier
from leaderboard.common.topics import Topics
from leaderboard.scorer.assignment import Assignment
from leaderboard.scorer.bootstrap import Ports
from leaderboard.scorer.health import Progress
from leaderboard.scorer.settings import ScorerSettings


@dataclass
class Runtime:
    settings: ScorerSettings
    progress: Progress
    ports: Ports | None = None  # set once start-up has completed: the scorer is ready
    started: asyncio.Event = field(default_factory=asyncio.Event)
    assignment: Assignment = field(init=False)  # the actions topic's partitions this worker holds
    _verifier: TokenVerifier | None = None

    def __post_init__(self) -> None:
        self.assignment = Assignment(Topics(self.settings.topic_prefix).actions)

    def mark_ready(self, ports: Ports) -> None:
        self.ports = ports
        self.started.set()

    def verifier(self) -> TokenVerifier:
        """Built on first use, not at start: a scorer whose admin route has no key configured
        (``RuntimeError``) still scores, and the dev key pair may be created after it started."""
        if self._verifier is None:
            self._verifier = TokenVerifier(self.settings)
        return self._verifier


class ScorerApp(faust.App):
    """The Faust app, with the :class:`Runtime` its views and services read."""

    runtime: Runtime

    def __init__(self, runtime: Runtime, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.runtime = runtime
