"""Kafka topic names (SPEC section 4), optionally prefixed so that shared clusters can host many stacks."""

from __future__ import annotations

from dataclasses import dataclass

ACTIONS = "leaderboard.actions.v1"
CHANGES = "leaderboard.changes.v1"
AUDIT = "leaderboard.audit.v1"
DLQ = "leaderboard.dlq.v1"


@dataclass(frozen=True)
class Topics:
    prefix: str = ""

    @property
    def actions(self) -> str:
        return self.prefix + ACTIONS

    @property
    def changes(self) -> str:
        return self.prefix + CHANGES

    @property
    def audit(self) -> str:
        return self.prefix + AUDIT

    @property
    def dlq(self) -> str:
        return self.prefix + DLQ
