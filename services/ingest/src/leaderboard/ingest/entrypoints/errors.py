"""THE map from ingest's refusals to HTTP: status, code, headers and body for every domain exception
(:data:`ANSWERS`, :func:`api_error`), what OpenAPI documents for each status (:func:`documented`), and
the audit of every refusal (a counter by code and an ``AttemptRejected`` event on the audit topic).

This is the only module that knows the status code of a domain error. A new refusal is a class in
``leaderboard.ingest.errors`` and one line in :data:`ANSWERS` (a test fails until it has one).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import Counter
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from leaderboard.common.events import AttemptRejected, now_ms
from leaderboard.common.web import ApiError, error_response, install_error_handlers, request_id
from leaderboard.ingest.entrypoints.deps import client_ip, maybe_ports
from leaderboard.ingest.entrypoints.schemas import ErrorModel, TicketUsedError
from leaderboard.ingest.errors import (
    CapReached,
    DevModeOff,
    DomainError,
    Invalid,
    LogUnavailable,
    RateLimited,
    RoleRefused,
    StoreUnavailable,
    TicketExpired,
    TicketForbidden,
    TicketNotFound,
    TicketUsed,
    TooFast,
    UnknownActionType,
    UnknownTicketOutcome,
)

log = logging.getLogger(__name__)
REFUSED = Counter("ingest_refused_total", "Requests refused, by error code", ["code"])

# Each refusal's status and code. Its headers and extra body fields are in `_headers` and `_extra`.
ANSWERS: dict[type[DomainError], tuple[int, str]] = {
    UnknownActionType: (422, "unknown_action_type"),
    Invalid: (422, "invalid"),
    TooFast: (422, "too_fast"),
    TicketNotFound: (404, "not_found"),
    DevModeOff: (404, "not_found"),
    TicketForbidden: (403, "forbidden"),
    RoleRefused: (403, "forbidden"),
    TicketUsed: (409, "ticket_used"),
    TicketExpired: (410, "ticket_expired"),
    CapReached: (429, "cap_reached"),
    RateLimited: (429, "rate_limited"),
    LogUnavailable: (503, "unavailable"),
    StoreUnavailable: (503, "unavailable"),
    UnknownTicketOutcome: (503, "unavailable"),
}
# What the audit trail records instead of the client's sentence, where they differ.
_AUDIT_DETAIL: dict[type[DomainError], str] = {StoreUnavailable: "ticket store unavailable"}


def _headers(exc: DomainError, retry_after_s: int) -> dict[str, str]:
    if isinstance(exc, CapReached):
        return {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, RateLimited):
        return dict(exc.headers)
    if isinstance(exc, LogUnavailable | StoreUnavailable):
        return {"Retry-After": str(retry_after_s)}
    if isinstance(exc, UnknownTicketOutcome):
        return {"Retry-After": "1"}
    return {}


def _extra(exc: DomainError) -> dict[str, Any]:
    return {"eventId": exc.event_id} if isinstance(exc, TicketUsed) else {}


def api_error(exc: DomainError, retry_after_s: int) -> ApiError:
    """The HTTP answer to ``exc``; ``retry_after_s`` is what an outage asks clients to wait."""
    status, code = ANSWERS[type(exc)]
    return ApiError(status, code, exc.message, _headers(exc, retry_after_s), **_extra(exc))


async def audit_refusal(request: Request, status: int, code: str, message: str) -> None:
    """Count the refusal and, once the publisher runs, put an AttemptRejected on the audit topic."""
    REFUSED.labels(code).inc()
    p = maybe_ports(request)
    if p is None:
        return
    p.publisher.audit(
        AttemptRejected(
            reason=code,
            detail=message,
            user_id=getattr(request.state, "user_id", None),
            client_ip=client_ip(request),
            request_id=request_id(request),
            path=request.url.path,
            at=now_ms(),
        )
    )


async def _audit_safely(request: Request, status: int, code: str, message: str) -> None:
    try:
        await audit_refusal(request, status, code, message)
    except Exception:  # the audit trail must never turn an answer into a 500
        log.exception("auditing a refused request failed")


async def answer(request: Request, exc: DomainError) -> Response:
    """The exception handler of every domain refusal: audit it, answer it in the error shape."""
    err = api_error(exc, request.app.state.settings.retry_after_s)
    await _audit_safely(request, err.status, err.code, _AUDIT_DETAIL.get(type(exc), err.message))
    return error_response(err.status, err.code, err.message, err.headers, **err.extra)


async def store_down(request: Request, exc: Exception) -> Response:
    """Redis failed under a dependency or a use case: :class:`StoreUnavailable`, never a 500."""
    log.warning("redis unavailable: %s", exc)
    return await answer(request, StoreUnavailable())


def audit_scope(status: int, code: str) -> Callable[[Scope, str], Awaitable[None]]:
    """An audit hook for ASGI middleware that refuses before FastAPI sees the request."""

    async def audit(scope: Scope, message: str) -> None:
        await _audit_safely(Request(scope), status, code, message)

    return audit


def install(app: FastAPI) -> None:
    """The shared error shape and handlers, plus ingest's: domain refusals, Redis outages, and FastAPI's
    400 for an undecodable body reported as what it is to a client (malformed JSON, 422 ``invalid``)."""
    install_error_handlers(app, audit_refusal)
    http_error = app.exception_handlers[StarletteHTTPException]

    async def http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400:
            message = "request body is not valid UTF-8 JSON"
            await _audit_safely(request, 422, "invalid", message)
            return error_response(422, "invalid", message)
        response = http_error(request, exc)
        return await response if inspect.isawaitable(response) else response

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DomainError)
        return await answer(request, exc)

    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(DomainError, refused)
    app.add_exception_handler(RedisError, store_down)


# --- what OpenAPI documents ------------------------------------------------------------------------

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
_DESCRIPTIONS = {
    401: "Missing, malformed, expired or otherwise unacceptable token (`unauthorized`)",
    403: "The token's role may not call this, or the ticket is another player's (`forbidden`)",
    404: "Unknown actionId (`not_found`)",
    409: "The ticket was already used (`ticket_used`, with the original `eventId`)",
    410: "The ticket expired (`ticket_expired`)",
    413: "Request body too large (`too_large`)",
    422: "Schema, time or catalog violation (`invalid`, `too_fast`, `unknown_action_type`)",
    429: "Rate limit (`rate_limited`) or hourly cap (`cap_reached`); see Retry-After",
    503: "Kafka or Redis unavailable; nothing was recorded (`unavailable`); see Retry-After",
}
# What every authenticated write can answer besides its own success and ticket outcomes.
AUTH_ERRORS = (401, 403, 413, 422, 429, 503)
TICKET_ERRORS = (404, 409, 410)


def documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these refusal statuses: the error model, a description, Retry-After."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {
            "model": TicketUsedError if code == 409 else ErrorModel,
            "description": _DESCRIPTIONS.get(code, "Refused"),
        }
        if code in (429, 503):
            entry["headers"] = _RETRY_AFTER
        out[code] = entry
    return out
