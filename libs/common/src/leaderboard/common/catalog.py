"""The action catalog (a TOML file): points, bounds, pacing and caps per action type. Pure.

Shared: ingest prices and paces player actions with it, the scorer derives its default velocity caps
from the per-hour caps (so the service path is capped too, see ``LEADERBOARD_SERVICE_CAPS``)."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from leaderboard.common.events import MAX_POINTS, ActionType


class ActionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    points: int = Field(ge=1, le=MAX_POINTS)
    max_points: int = Field(ge=1, le=MAX_POINTS)
    min_seconds: float = Field(ge=0, le=86400)
    per_hour: int = Field(ge=0, description="0 means uncapped")
    ttl_seconds: int = Field(900, ge=1, le=7 * 86400)

    @model_validator(mode="after")
    def _bounds(self) -> ActionSpec:
        if self.max_points < self.points:
            raise ValueError("max_points must be at least points")
        return self


class CatalogFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    actions: dict[ActionType, ActionSpec] = Field(min_length=1)


class Catalog:
    def __init__(self, actions: dict[str, ActionSpec]) -> None:
        self.actions = dict(actions)

    @classmethod
    def load(cls, path: Path | None) -> Catalog:
        if path is None:
            text = resources.files("leaderboard.common").joinpath("catalog.default.toml").read_text()
        else:
            text = path.read_text()
        return cls(CatalogFile.model_validate(tomllib.loads(text)).actions)

    def get(self, action_type: str) -> ActionSpec | None:
        return self.actions.get(action_type)

    def public(self) -> list[dict[str, object]]:
        return [
            {
                "actionType": name,
                "points": spec.points,
                "maxPoints": spec.max_points,
                "minSeconds": spec.min_seconds,
                "perHour": spec.per_hour,
                "ttlSeconds": spec.ttl_seconds,
            }
            for name, spec in sorted(self.actions.items())
        ]
