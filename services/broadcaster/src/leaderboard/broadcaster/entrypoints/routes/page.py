"""The demo page at ``/``: the live top 10 over the WebSocket (and, in dev mode, a button that plays
the ticket flow against ingest). The page is one static file with two placeholders filled here."""

from __future__ import annotations

import functools
import json
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from leaderboard.broadcaster.entrypoints.deps import PortsDep
from leaderboard.broadcaster.settings import BroadcasterSettings

router = APIRouter()


@functools.cache
def template() -> str:
    return resources.files("leaderboard.broadcaster").joinpath("static/index.html").read_text()


def render(settings: BroadcasterSettings) -> HTMLResponse:
    """The page for this instance's ingest URL and mode, with a CSP that lets it reach only that."""
    html = template().replace("__INGEST_URL__", json.dumps(settings.ingest_public_url))
    html = html.replace("__DEV_MODE__", "true" if settings.dev_mode else "false")
    return HTMLResponse(
        html,
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": "default-src 'self'; "
            f"connect-src 'self' ws: wss: {settings.ingest_public_url}; "
            "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'",
        },
    )


@router.get("/", include_in_schema=False)
async def index(p: PortsDep) -> HTMLResponse:
    return render(p.settings)
