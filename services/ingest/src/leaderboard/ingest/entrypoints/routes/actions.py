"""The player path: POST /api/v1/actions starts an action (a single-use ticket), POST
/api/v1/score/update completes it."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from leaderboard.common.events import iso_ms
from leaderboard.common.web import request_id
from leaderboard.ingest.entrypoints.deps import Player, PortsDep, ports
from leaderboard.ingest.entrypoints.errors import AUTH_ERRORS, TICKET_ERRORS, documented
from leaderboard.ingest.entrypoints.schemas import Accepted, ActionStarted, CompleteAction, StartAction

router = APIRouter(tags=["actions"])


@router.post(
    "/api/v1/actions",
    status_code=201,
    response_model=ActionStarted,
    responses=documented(*AUTH_ERRORS),
)
async def start_action(body: StartAction, who: Player, p: PortsDep) -> ActionStarted:
    """Start an action: returns a single-use ticket (actionId) bound to the player and type."""
    ticket = await p.service.start_action(who, body.action_type)
    return ActionStarted(
        action_id=ticket.action_id,
        action_type=ticket.action_type,
        points=ticket.points,
        expires_at=iso_ms(ticket.expires_at),
        not_before=iso_ms(ticket.not_before),
    )


@router.post(
    "/api/v1/score/update",
    status_code=202,
    response_model=Accepted,
    response_model_exclude_none=True,
    responses={
        200: {"model": Accepted, "description": "Applied (with ?wait=true)"},
        202: {"model": Accepted, "description": "In the event log (Kafka acknowledged it)"},
        **documented(*AUTH_ERRORS, *TICKET_ERRORS),
    },
)
async def complete_action(
    request: Request,
    body: CompleteAction,
    who: Player,
    response: Response,
    wait: Annotated[bool, Query(description="Wait (bounded) until the scorer applied it")] = False,
) -> Accepted:
    """Complete a started action. 202 once the event is in the log; 200 with newScore when waited."""
    # The hot path: the request id and the ports are read here rather than declared as
    # dependencies, each of which costs FastAPI's resolution machinery on every request.
    p, rid = ports(request), request_id(request)
    done = await p.service.complete_action(who, body.action_id, body.timestamp, rid, wait)
    if done.new_score is not None:
        response.status_code = 200
    return Accepted(
        user_id=uuid.UUID(done.user_id),
        action_id=done.action_id,
        event_id=done.event_id,
        new_score=done.new_score,
    )
