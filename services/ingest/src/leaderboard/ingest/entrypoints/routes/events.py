"""The service path: POST /api/v1/events (game backends' batches) and seed 004's POST /score."""

from __future__ import annotations

from fastapi import APIRouter, Request

from leaderboard.common.web import request_id
from leaderboard.ingest.entrypoints.deps import PortsDep, RequestId, Service, ports
from leaderboard.ingest.entrypoints.errors import AUTH_ERRORS, documented
from leaderboard.ingest.entrypoints.schemas import BatchAccepted, EventBatch, LegacyAccepted, LegacyScore

router = APIRouter(tags=["service"])


@router.post(
    "/api/v1/events",
    status_code=202,
    response_model=BatchAccepted,
    responses=documented(*AUTH_ERRORS),
)
async def submit_events(request: Request, body: EventBatch, who: Service) -> BatchAccepted:
    """Game backends: up to 1,000 completed actions, atomically; repeats are reported as duplicates."""
    result = await ports(request).service.submit_events(who, body.events, request_id(request))
    return BatchAccepted(accepted=result.accepted, duplicates=result.duplicates)


@router.post(
    "/score",
    status_code=202,
    response_model=LegacyAccepted,
    responses=documented(*AUTH_ERRORS),
)
async def legacy_score(rid: RequestId, body: LegacyScore, who: Service, p: PortsDep) -> LegacyAccepted:
    """Seed 004's endpoint: one completed action worth ``increment`` points (service tokens only)."""
    action_id, result = await p.service.submit_legacy(
        who,
        user_id=body.user_id,
        increment=body.increment,
        action_id=body.action_id,
        action_type=body.action_type,
        username=body.username,
        request_id=rid,
    )
    return LegacyAccepted(
        user_id=body.user_id,
        action_id=action_id,
        accepted=result.accepted,
        duplicates=result.duplicates,
    )
