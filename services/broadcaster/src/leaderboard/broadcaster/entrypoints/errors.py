"""THE map from the broadcaster's domain exceptions to HTTP answers: status, ``code`` and headers.

The only place that knows status codes for refusals. REST routes raise and :func:`install` answers;
a refused WebSocket handshake gets the same answer as an ASGI denial response (:func:`deny`). The
body is always ``{"status": "error", "error": <sentence>, "code": <code>}`` with the request id.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse

from leaderboard.broadcaster.errors import (
    ArchiveUnavailable,
    DomainError,
    Draining,
    Invalid,
    NoSuchSocket,
    OriginRefused,
    TooManyClients,
    TooManyFromAddress,
    Unauthenticated,
    UnknownBoard,
    UnknownPeriod,
    UserNotRanked,
    VerifierUnavailable,
)
from leaderboard.common.web import error_response

# WebSocket close reasons are at most 123 bytes; a refusal's sentence is cut to fit.
CLOSE_REASON_MAX = 120


@dataclass(frozen=True)
class Answer:
    status: int
    code: str
    headers: dict[str, str] = field(default_factory=dict)


def _retry_after_s(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


ERROR_MAP: dict[type[DomainError], Callable[[Any], Answer]] = {
    UnknownBoard: lambda e: Answer(404, "not_found"),
    UnknownPeriod: lambda e: Answer(404, "not_found"),
    UserNotRanked: lambda e: Answer(404, "not_found"),
    NoSuchSocket: lambda e: Answer(404, "not_found"),
    Invalid: lambda e: Answer(422, "invalid"),
    Unauthenticated: lambda e: Answer(401, "unauthorized", {"WWW-Authenticate": "Bearer"}),
    ArchiveUnavailable: lambda e: Answer(503, "unavailable", {"Retry-After": "5"}),
    VerifierUnavailable: lambda e: Answer(503, "unavailable", {"Retry-After": "60"}),
    OriginRefused: lambda e: Answer(403, "forbidden"),
    TooManyFromAddress: lambda e: Answer(429, "rate_limited", _retry_after_s(e.retry_after_s)),
    TooManyClients: lambda e: Answer(503, "unavailable", _retry_after_s(e.retry_after_s)),
    Draining: lambda e: Answer(503, "unavailable", _retry_after_s(e.retry_after_ms / 1000)),
}


def answer_for(exc: DomainError) -> Answer:
    """The answer for ``exc`` (its class or the nearest mapped base class)."""
    for kind in type(exc).__mro__:
        if kind in ERROR_MAP:
            return ERROR_MAP[kind](exc)
    raise LookupError(f"no answer mapped for {type(exc).__name__}")  # a test covers every class


def response_for(exc: DomainError, request_id: str | None = None) -> JSONResponse:
    answer = answer_for(exc)
    headers = {**answer.headers, **({"X-Request-ID": request_id} if request_id else {})}
    return error_response(answer.status, answer.code, str(exc), headers or None)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return response_for(exc)  # RequestIdMiddleware adds the request id on HTTP


def install(app: FastAPI) -> None:
    """Answer every :class:`DomainError` a route raises (after the shared handlers, so it wins)."""
    app.add_exception_handler(DomainError, _domain_error)


async def deny(websocket: WebSocket, exc: DomainError) -> None:
    """Refuse a handshake with the HTTP answer (ASGI denial response), carrying the request id as
    every HTTP answer does (RequestIdMiddleware only sees ``http.*`` messages). Servers without the
    extension can only close: 1008 (policy violation) with the sentence."""
    request_id = websocket.scope.get("state", {}).get("request_id")
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response_for(exc, request_id))
    else:
        await websocket.close(code=1008, reason=str(exc)[:CLOSE_REASON_MAX])
