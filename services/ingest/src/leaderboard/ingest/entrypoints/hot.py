"""The hot write path: ``POST /api/v1/score/update`` and ``POST /api/v1/events`` answered without
FastAPI's routing, dependency solver and response machinery, by the same pieces the routes use.

Why: under load (k6, issue 12) FastAPI's request machinery (Starlette routing, the dependency
solver resolving player -> principal -> HTTPBearer, body and query validation, response
serialisation) was about 40% of ingest's CPU per completion. Here a completion is: the bearer check
(:func:`leaderboard.common.auth.authenticate`, verified tokens cached), the role gate and the rate
limit of ``deps`` (:func:`~leaderboard.ingest.entrypoints.deps.require_player`,
:func:`~leaderboard.ingest.entrypoints.deps.charge`), the route's request schema
(``model_validate_json``), the use case of ``service.py``, and one response. A completion's rate limit
is charged by the use case in the ticket claim's own Redis script (``limits=``): two Redis round trips
per completion (charge and claim, then confirm) instead of three, with the same order of answers.

A pure ASGI middleware (no ``BaseHTTPMiddleware``) inside the request id, CORS and the body limit
(``app.add_middleware`` order), so those apply to its answers as to the routes'. It answers only a
plain request: that method and path, ``Content-Type: application/json``, no query but ``wait=true`` or
``wait=false`` on completions, a body the schema accepts, a token that verifies. Anything else goes on
to FastAPI unchanged, which answers it as it always did (the routes stay registered, so
``/openapi.json`` documents them as before): that keeps FastAPI's order of answers (malformed JSON
422 before 401; 401, 403 and 429 before a schema 422) and its messages, since nothing has been
charged or claimed when the request goes on. From the role gate on, a refusal is answered here by
the error map of ``entrypoints/errors.py`` (:func:`~leaderboard.ingest.entrypoints.errors.answer`,
:func:`~leaderboard.ingest.entrypoints.errors.store_down`): the same status, code, headers, body and
audit as the route's exception handlers.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leaderboard.common.auth import AuthError, Principal, authenticate
from leaderboard.common.web import new_request_id
from leaderboard.ingest.entrypoints import errors
from leaderboard.ingest.entrypoints.deps import (
    charge,
    limits_for,
    require_player,
    require_service,
    scope_client_ip,
)
from leaderboard.ingest.entrypoints.schemas import Accepted, BatchAccepted, CompleteAction, EventBatch
from leaderboard.ingest.errors import DomainError

if TYPE_CHECKING:
    from leaderboard.ingest.bootstrap import Ports

COMPLETE_PATH, EVENTS_PATH = "/api/v1/score/update", "/api/v1/events"
_WAIT = {b"": False, b"wait=false": False, b"wait=true": True}
_JSON = b"application/json"


class HotWrites:
    """The middleware (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == COMPLETE_PATH:
            wait = _WAIT.get(scope["query_string"])
        elif path == EVENTS_PATH:
            wait = False if not scope["query_string"] else None
        else:
            await self.app(scope, receive, send)
            return
        app = scope.get("app")
        p: Ports | None = getattr(app.state, "ports", None) if app is not None else None
        content_type = authorization = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"authorization":
                authorization = value
        if wait is None or p is None or content_type != _JSON or authorization is None:
            await self.app(scope, receive, send)
            return
        first = await receive()
        if first["type"] != "http.request" or first.get("more_body", False):
            await self.app(scope, _replay(first, receive), send)
            return
        body: bytes = first.get("body", b"")
        schema: type[BaseModel] = CompleteAction if path == COMPLETE_PATH else EventBatch
        try:
            parsed = schema.model_validate_json(body)
            who = await authenticate(authorization.decode("latin-1"), p.verifier)
        except (ValidationError, AuthError):
            await self.app(scope, _replay(first, receive), send)  # FastAPI answers it (and charges it)
            return
        state = scope.setdefault("state", {})
        state["user_id"] = who.sub  # as the shared bearer dependency keeps it, for the audit
        rid = str(state.get("request_id", "")) or new_request_id()
        try:
            if isinstance(parsed, CompleteAction):
                status, headers, out = await _complete(p, scope, who, parsed, rid, wait)
            else:
                assert isinstance(parsed, EventBatch)
                status, headers, out = await _submit(p, scope, who, parsed, rid)
        except DomainError as exc:
            await _send_response(send, await errors.answer(Request(scope), exc))
            return
        except RedisError as exc:
            await _send_response(send, await errors.store_down(Request(scope), exc))
            return
        raw = [(b"content-length", str(len(out)).encode()), (b"content-type", _JSON)]
        raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": out})


async def _complete(
    p: Ports, scope: Scope, who: Principal, body: CompleteAction, rid: str, wait: bool
) -> tuple[int, dict[str, str], bytes]:
    """``routes/actions.complete_action`` behind the ``player`` dependency, its rate limit charged in
    the ticket claim's Redis round trip (the use case charges it before any refusal of its own)."""
    require_player(who)
    limits = limits_for(who, scope_client_ip(scope, p), p)
    done = await p.service.complete_action(who, body.action_id, body.timestamp, rid, wait, limits=limits)
    reply = Accepted(
        user_id=uuid.UUID(done.user_id),
        action_id=done.action_id,
        event_id=done.event_id,
        new_score=done.new_score,
    )
    status = 200 if done.new_score is not None else 202
    return status, done.limit_headers, reply.model_dump_json(by_alias=True, exclude_none=True).encode()


async def _submit(
    p: Ports, scope: Scope, who: Principal, body: EventBatch, rid: str
) -> tuple[int, dict[str, str], bytes]:
    """``routes/events.submit_events`` behind the ``service_caller`` dependency."""
    require_service(who)
    headers = await charge(who, scope_client_ip(scope, p), p)
    result = await p.service.submit_events(who, body.events, rid)
    reply = BatchAccepted(accepted=result.accepted, duplicates=result.duplicates)
    return 202, headers, reply.model_dump_json(by_alias=True).encode()


def _replay(first: Message, receive: Receive) -> Receive:
    """``receive`` with ``first`` (already read here) delivered again first."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return first
        return await receive()

    return replay


async def _send_response(send: Send, response: Response) -> None:
    await send(
        {"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers}
    )
    await send({"type": "http.response.body", "body": response.body})
