"""GET /api/v1/catalog: the action types a client may start, with their rules."""

from __future__ import annotations

from fastapi import APIRouter

from leaderboard.ingest.entrypoints.deps import CatalogDep
from leaderboard.ingest.entrypoints.errors import documented
from leaderboard.ingest.entrypoints.schemas import CatalogListing

router = APIRouter(tags=["actions"])


@router.get("/api/v1/catalog", response_model=CatalogListing, responses=documented(413))
async def get_catalog(catalog: CatalogDep) -> CatalogListing:
    """The action types: points, bounds for game backends, minimum duration and hourly cap."""
    return CatalogListing.model_validate({"actions": catalog.public()})
