"""Admins' corrections (admin JWT): POST /api/v1/admin/actions/{actionId}/void and
/api/v1/admin/users/{userId}/void | restore | rename. Each is an event on the log (see
``leaderboard.ingest.corrections``); 202 once Kafka acknowledged it, the scorer then recomputes every
affected board and the broadcaster pushes the change."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Request, Response

from leaderboard.common.auth import Principal
from leaderboard.common.events import Correction, Reason, Username
from leaderboard.ingest.corrections import Corrections
from leaderboard.ingest.entrypoints.deps import Authenticated, client_ip, ports, rate_limit
from leaderboard.ingest.entrypoints.errors import AUTH_ERRORS, documented
from leaderboard.ingest.entrypoints.schemas import Reply, Strict
from leaderboard.ingest.errors import RoleRefused

router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


async def admin(request: Request, response: Response, who: Authenticated) -> Principal:
    """The admin routes' gate: the admin role, then the caller's rate limit."""
    if who.role != "admin":
        raise RoleRefused("the admin role is required to correct scores")
    await rate_limit(response, who, client_ip(request), ports(request))
    return who


Admin = Annotated[Principal, Depends(admin)]


class VoidAction(Strict):
    user_id: UUID
    reason: Reason


class Reasoned(Strict):
    reason: Reason


class Restore(Strict):
    reason: Reason
    action_id: UUID | None = None


class Rename(Strict):
    username: Username
    reason: Reason


class CorrectionAccepted(Reply):
    status: Literal["accepted"] = "accepted"
    correction_id: UUID
    event_type: str
    user_id: UUID


def accepted(c: Correction) -> CorrectionAccepted:
    return CorrectionAccepted(correction_id=c.correction_id, event_type=type(c).__name__, user_id=c.user_id)


def corrections(request: Request) -> Corrections:
    return Corrections(ports(request).publisher)


_RESPONSES = documented(*AUTH_ERRORS)


@router.post("/actions/{action_id}/void", status_code=202, responses=_RESPONSES)
async def void_action(request: Request, action_id: UUID, body: VoidAction, who: Admin) -> CorrectionAccepted:
    """One action stops counting on every board and period it fed."""
    return accepted(await corrections(request).void_action(who, body.user_id, action_id, body.reason))


@router.post("/users/{user_id}/void", status_code=202, responses=_RESPONSES)
async def void_user(request: Request, user_id: UUID, body: Reasoned, who: Admin) -> CorrectionAccepted:
    """Every action of the user applied so far stops counting (a cheater)."""
    return accepted(await corrections(request).void_user(who, user_id, body.reason))


@router.post("/users/{user_id}/restore", status_code=202, responses=_RESPONSES)
async def restore(request: Request, user_id: UUID, body: Restore, who: Admin) -> CorrectionAccepted:
    """The user's voided actions count again (all of them, or only ``actionId``)."""
    return accepted(await corrections(request).restore(who, user_id, body.reason, body.action_id))


@router.post("/users/{user_id}/rename", status_code=202, responses=_RESPONSES)
async def rename(request: Request, user_id: UUID, body: Rename, who: Admin) -> CorrectionAccepted:
    """The user's display name on every board."""
    return accepted(await corrections(request).rename(who, user_id, body.username, body.reason))
