"""POST /api/v1/dev/token: dev mode only, a player token for a fresh demo player (the demo page's
button). Outside dev mode it answers as a missing route and OpenAPI does not list it."""

from __future__ import annotations

import asyncio
import random
import uuid

from fastapi import APIRouter, Request, Response

from leaderboard.common.auth import mint_token
from leaderboard.ingest.adapters.ratelimit import Limit
from leaderboard.ingest.entrypoints.deps import ClientIp, PortsDep
from leaderboard.ingest.entrypoints.errors import documented
from leaderboard.ingest.errors import DevModeOff, RateLimited

router = APIRouter(tags=["dev"])

_ADJECTIVES = ["Swift", "Brave", "Clever", "Mighty", "Quiet", "Lucky", "Fierce", "Nimble", "Bold", "Sly"]
_ANIMALS = ["Fox", "Otter", "Falcon", "Lynx", "Badger", "Heron", "Wolf", "Panda", "Raven", "Tiger"]


def demo_name() -> str:
    return f"{random.choice(_ADJECTIVES)} {random.choice(_ANIMALS)} {random.randint(10, 99)}"


@router.post("/api/v1/dev/token", responses=documented(404, 413, 429, 503))
async def dev_token(request: Request, response: Response, p: PortsDep, ip: ClientIp) -> dict[str, str]:
    """Dev mode only: a player token for a fresh demo player (the demo page's button)."""
    if not p.settings.dev_mode:
        raise DevModeOff(request.url.path)
    decision = await p.limiter.check([Limit(f"devtoken:{ip}", 30, 10)])
    if not decision.allowed:
        raise RateLimited("too many demo players from this address", decision.headers())
    sub = str(uuid.uuid4())
    name = demo_name()
    token = await asyncio.to_thread(mint_token, p.settings, sub=sub, role="player", name=name, ttl_s=3600)
    return {"token": token, "userId": sub, "username": name}
