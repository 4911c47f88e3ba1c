"""HTTP plumbing shared by the two FastAPI services: the error shape, request ids, client IPs,
bearer authentication, body limits, CORS, health and Prometheus endpoints.

Errors always have seed 000's shape ``{"status": "error", "error": <sentence>, "code": <code>}``
(:class:`ErrorModel`, the one declaration of it for every OpenAPI document); nothing ever returns a
stack trace. Bearer authentication is :func:`leaderboard.common.auth.authenticate` wrapped as a FastAPI
dependency by :func:`bearer_principal`, so every route refuses a token the same way.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leaderboard.common.auth import AuthError, Principal, TokenVerifier, authenticate

# The request-id rule lives with the events that carry it, importable without a web framework (the
# scorer serves HTTP with Faust); re-exported here for the web services.
from leaderboard.common.events import is_sane_request_id as is_sane_request_id
from leaderboard.common.events import new_request_id as new_request_id

log = logging.getLogger(__name__)

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.extra = extra


class ErrorModel(BaseModel):
    """Seed 000's error shape; ``code`` is machine-readable, ``error`` a sentence for people."""

    status: Literal["error"] = "error"
    error: str
    code: str


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"status": "error", "error": message, "code": code, **extra}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse(error_body(code, message, **extra), status_code=status, headers=headers)


def describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        field = ".".join(loc) or "body"
        kind = err.get("type", "")
        if kind == "extra_forbidden":
            parts.append(f"unknown field '{field}'")
        elif kind == "missing":
            parts.append(f"missing field '{field}'")
        else:
            parts.append(f"field '{field}': {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install_error_handlers(
    app: FastAPI, on_error: Callable[[Request, int, str, str], Awaitable[None]] | None = None
) -> None:
    async def report(request: Request, status: int, code: str, message: str) -> None:
        if on_error is not None:
            try:
                await on_error(request, status, code, message)
            except Exception:  # the audit trail must never turn an answer into a 500
                log.exception("reporting a refused request failed")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        await report(request, exc.status, exc.code, exc.message)
        return error_response(exc.status, exc.code, exc.message, exc.headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message = describe_validation(exc)
        await report(request, 422, "invalid", message)
        return error_response(422, "invalid", message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route for {request.method} {request.url.path}"
        return error_response(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal", "internal error; the request id identifies it in the logs")


def sane_request_id(given: str) -> str:
    """The caller's X-Request-ID when it is short and plain (it goes into logs and events), else a new one."""
    return given if is_sane_request_id(given) else new_request_id()


class RequestIdMiddleware:
    """Keeps a caller's X-Request-ID when it is sane, else makes one; echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = sane_request_id(given)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)


class ErrorShapeCORS(CORSMiddleware):
    """Starlette's CORS middleware, whose refused preflights use the error shape (403 ``forbidden``)
    instead of a text/plain 400. Starlette decides what is allowed; this only changes the answer."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refused = bytes(response.body).decode("latin-1").removeprefix("Disallowed CORS ") or "request"
        origin = request_headers.get("origin", "")
        headers = {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}
        headers["Vary"] = "Origin"
        return error_response(
            403,
            "forbidden",
            f"cross-origin request refused: {refused} not allowed for origin {origin[:200]!r}",
            headers,
        )


def add_cors(
    app: FastAPI,
    origins: list[str],
    *,
    methods: list[str],
    headers: list[str],
    expose: list[str] | None = None,
) -> None:
    """Allow ``origins`` (nothing when empty). Add it before :class:`RequestIdMiddleware`, so that the
    request id (added last, so outermost) is on CORS refusals too."""
    if not origins:
        return
    app.add_middleware(
        ErrorShapeCORS,
        allow_origins=origins,
        allow_methods=methods,
        allow_headers=headers,
        expose_headers=expose or [],
        max_age=600,
    )


class BodyLimitMiddleware:
    """Refuses bodies over ``limit`` bytes with 413 before the app reads them into memory."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(send)
            return
        received = 0
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        response = error_response(413, "too_large", f"request body exceeds {self.limit} bytes")
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class _TooLarge(Exception):
    pass


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "")) or new_request_id()


OnAuthRefused = Callable[[Request, AuthError], Awaitable[None]]


def bearer_principal(
    verifier: Callable[[Request], TokenVerifier | None],
    *,
    on_refused: OnAuthRefused | None = None,
    description: str | None = None,
) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency that answers the request's :class:`Principal` (also kept as
    ``request.state.user_id``, for the audit of later refusals).

    ``verifier`` finds the service's verifier (None: verification is not configured, 503). A refused
    token is 401 ``unauthorized`` with the challenge of RFC 6750; ``on_refused`` runs first and may
    raise its own refusal instead (ingest charges failed authentications to the client's rate limit).
    The dependency declares an ``HTTPBearer`` scheme so that OpenAPI documents the security scheme.
    """
    scheme = HTTPBearer(auto_error=False, description=description)

    async def principal(
        request: Request,
        _documented: HTTPAuthorizationCredentials | None = Depends(scheme),  # noqa: B008 (the scheme is local)
    ) -> Principal:
        found = verifier(request)
        if found is None:
            raise ApiError(503, "unavailable", "token verification is not configured", {"Retry-After": "60"})
        try:
            who = await authenticate(request.headers.get("authorization"), found)
        except AuthError as exc:
            if on_refused is not None:
                await on_refused(request, exc)
            raise ApiError(401, "unauthorized", str(exc), {"WWW-Authenticate": exc.challenge}) from None
        request.state.user_id = who.sub
        return who

    return principal


class ClientIpResolver:
    """The client IP: the peer address, or X-Forwarded-For's right-most untrusted hop when the peer
    is one of the configured trusted proxies (never the left-most, which the client controls)."""

    def __init__(self, trusted: Iterable[str]) -> None:
        self._trusted = [ipaddress.ip_network(cidr, strict=False) for cidr in trusted]

    def _is_trusted(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._trusted)

    def __call__(self, peer: str | None, forwarded_for: str | None) -> str:
        peer = peer or "unknown"
        if not self._trusted or not forwarded_for or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return peer
        return hops[0] if hops else peer


def add_ops_routes(app: FastAPI, ready: Callable[[], Awaitable[dict[str, str]]]) -> None:
    """/healthz (the process answers), /readyz (its dependencies answer), /metrics (Prometheus)."""

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        checks = await ready()
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
