"""Ingest: the write side. Authenticates completed actions and writes them to Kafka.

Run it with ``leaderboard ingest`` (or ``python -m leaderboard.ingest``); settings come from
``LEADERBOARD_*`` variables (see ``IngestSettings``).
"""

import asyncio
import contextlib
import inspect
import logging
import random
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from leaderboard.common.auth import AuthError, Principal, TokenVerifier, mint_token
from leaderboard.common.catalog import Catalog
from leaderboard.common.events import AttemptRejected, now_ms
from leaderboard.common.kafka import ensure_topics, producer
from leaderboard.common.redis import redis_client
from leaderboard.common.topics import Topics
from leaderboard.common.web import (
    ApiError,
    ClientIpResolver,
    RequestIdMiddleware,
    add_cors,
    add_ops_routes,
    error_response,
    install_error_handlers,
    request_id,
)
from leaderboard.ingest import domain
from leaderboard.ingest.adapters.applied import AppliedWaiter
from leaderboard.ingest.adapters.publisher import Publisher
from leaderboard.ingest.adapters.ratelimit import Limit, RateLimiter
from leaderboard.ingest.adapters.tickets import TicketStore
from leaderboard.ingest.middleware import BufferedBodyLimit
from leaderboard.ingest.service import IngestService
from leaderboard.ingest.settings import IngestSettings

log = logging.getLogger(__name__)
REFUSED = Counter("ingest_refused_total", "Requests refused, by error code", ["code"])
bearer = HTTPBearer(
    auto_error=False, description="A JWT from your identity provider (dev: `leaderboard token`)."
)


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


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {
            "model": domain.TicketUsedError if code == 409 else domain.ErrorModel,
            "description": _DESCRIPTIONS.get(code, "Refused"),
        }
        if code in (429, 503):
            entry["headers"] = _RETRY_AFTER
        out[code] = entry
    return out


# What every authenticated write can answer besides its own success and ticket outcomes.
AUTH_ERRORS = (401, 403, 413, 422, 429, 503)


@dataclass
class Ports:
    """What the routes need, built in the lifespan."""

    settings: IngestSettings
    verifier: TokenVerifier
    service: IngestService
    limiter: RateLimiter
    publisher: Publisher
    client_ip: ClientIpResolver


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    catalog = Catalog.load(settings.catalog_file)
    if settings.legacy_action_type not in catalog.actions:
        raise RuntimeError(f"legacy_action_type {settings.legacy_action_type!r} is not in the catalog")
    topics = Topics(settings.topic_prefix)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ensure_topics(settings)
        # One quick retry on a dropped connection: after Redis restarts, pooled connections are dead
        # and the first command on each fails; a fresh connection answers. (Timeouts are not
        # retried: they would only stretch an outage's 503s.)
        retry = Retry(ExponentialBackoff(cap=0.2, base=0.02), 2, supported_errors=(RedisConnectionError,))
        async with (
            redis_client(settings, retry=retry, retry_on_error=[RedisConnectionError]) as redis,
            producer(settings) as kafka,
        ):
            publisher = Publisher(kafka, topics.actions, topics.audit, settings.kafka_send_timeout_s)
            applied = AppliedWaiter(redis, f"{settings.redis_prefix}:applied")
            publisher.start()
            applied.start()
            tickets = TicketStore(redis, settings.redis_prefix)
            app.state.ports = Ports(
                settings=settings,
                verifier=TokenVerifier(settings),
                service=IngestService(settings, catalog, tickets, publisher, applied),
                limiter=RateLimiter(redis, settings.redis_prefix),
                publisher=publisher,
                client_ip=ClientIpResolver(settings.trusted_proxies),
            )
            app.state.redis, app.state.kafka = redis, kafka
            try:
                yield
            finally:
                await applied.stop()
                await publisher.stop()

    app = FastAPI(
        title="Leaderboard ingest",
        version="1.0.0",
        description="Authenticated write API: action tickets, completions and game-backend events.",
        lifespan=lifespan,
    )

    async def audit_refusal(request: Request, status: int, code: str, message: str) -> None:
        REFUSED.labels(code).inc()
        ports: Ports | None = getattr(request.app.state, "ports", None)
        if ports is None:
            return
        ports.publisher.audit(
            AttemptRejected(
                reason=code,
                detail=message,
                user_id=getattr(request.state, "user_id", None),
                client_ip=_client_ip(request),
                request_id=request_id(request),
                path=request.url.path,
                at=now_ms(),
            )
        )

    install_error_handlers(app, audit_refusal)
    http_error = app.exception_handlers[StarletteHTTPException]

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # FastAPI answers 400 when a body cannot even be decoded (invalid UTF-8, for one); to a client
        # that is the same mistake as malformed JSON, which it reports as 422 `invalid`.
        if exc.status_code == 400:
            message = "request body is not valid UTF-8 JSON"
            await audit_refusal(request, 422, "invalid", message)
            return error_response(422, "invalid", message)
        response = http_error(request, exc)
        return await response if inspect.isawaitable(response) else response

    @app.exception_handler(RedisError)
    async def _redis_down(request: Request, exc: RedisError) -> JSONResponse:
        log.warning("redis unavailable: %s", exc)
        await audit_refusal(request, 503, "unavailable", "ticket store unavailable")
        return JSONResponse(
            domain.ErrorModel(
                error="ticket and rate-limit store unavailable; nothing was recorded, retry later",
                code="unavailable",
            ).model_dump(),
            status_code=503,
            headers={"Retry-After": str(settings.retry_after_s)},
        )

    async def audit_too_large(scope: Scope, message: str) -> None:
        try:
            await audit_refusal(Request(scope), 413, "too_large", message)
        except Exception:  # the audit trail must never turn an answer into a 500
            log.exception("auditing a too-large request failed")

    async def audit_undecodable(scope: Scope, message: str) -> None:
        try:
            await audit_refusal(Request(scope), 422, "invalid", message)
        except Exception:  # the audit trail must never turn an answer into a 500
            log.exception("auditing an undecodable request failed")

    # Outermost first: request id (so that every refusal below carries it), then CORS (so that even a
    # 413 carries its headers), then the body's limit and encoding.
    app.add_middleware(
        BufferedBodyLimit,
        limit=settings.max_body_bytes,
        on_refused=audit_too_large,
        on_invalid=audit_undecodable,
    )
    add_cors(
        app,
        list(settings.cors_origins) + (settings.dev_origins if settings.dev_mode else []),
        methods=["GET", "POST"],
        headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose=["Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "X-Request-ID"],
    )
    app.add_middleware(RequestIdMiddleware)

    def ports(request: Request) -> Ports:
        p: Ports = request.app.state.ports
        return p

    def _client_ip(request: Request) -> str:
        p: Ports | None = getattr(request.app.state, "ports", None)
        peer = request.client.host if request.client else None
        return p.client_ip(peer, request.headers.get("x-forwarded-for")) if p else (peer or "unknown")

    async def principal(
        request: Request,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        p: Annotated[Ports, Depends(ports)],
    ) -> Principal:
        if creds is None or creds.scheme.lower() != "bearer":
            await refuse_unauthenticated(request, p, "missing bearer token", "Bearer")
        assert creds is not None
        try:
            if p.verifier.fetches_keys:  # a JWKS fetch must not stall the event loop
                who = await asyncio.to_thread(p.verifier.verify, creds.credentials)
            else:
                who = p.verifier.verify(creds.credentials)
        except AuthError as exc:
            await refuse_unauthenticated(request, p, str(exc), 'Bearer error="invalid_token"')
        except Exception:  # a verifier bug must still fail closed, as a 401 and never a 500
            log.exception("token verification failed unexpectedly")
            await refuse_unauthenticated(request, p, "invalid token", 'Bearer error="invalid_token"')
        request.state.user_id = who.sub
        return who

    async def refuse_unauthenticated(request: Request, p: Ports, message: str, challenge: str) -> NoReturn:
        # Failed authentications are charged to the client IP, so that guessing tokens is rate limited too.
        s = p.settings
        ip = Limit(f"ip:{_client_ip(request)}", s.rate_ip_per_min, s.rate_ip_burst)
        decision = await p.limiter.check([ip])
        if not decision.allowed:
            raise ApiError(429, "rate_limited", "too many requests; slow down", decision.headers())
        raise ApiError(401, "unauthorized", message, {"WWW-Authenticate": challenge})

    async def limited(request: Request, response: Response, who: Principal, p: Ports) -> None:
        s = p.settings
        subject = (
            Limit(f"svc:{who.sub}", s.rate_service_per_min, s.rate_service_burst)
            if who.role in ("service", "admin")
            else Limit(f"user:{who.sub}", s.rate_player_per_min, s.rate_player_burst)
        )
        ip = Limit(f"ip:{_client_ip(request)}", s.rate_ip_per_min, s.rate_ip_burst)
        decision = await p.limiter.check([subject, ip] if who.role == "player" else [subject])
        if not decision.allowed:
            raise ApiError(429, "rate_limited", "too many requests; slow down", decision.headers())
        response.headers.update(decision.headers())

    async def player(
        request: Request,
        response: Response,
        who: Annotated[Principal, Depends(principal)],
        p: Annotated[Ports, Depends(ports)],
    ) -> Principal:
        if who.role != "player":
            raise ApiError(
                403, "forbidden", "this endpoint is for player tokens; game backends use /api/v1/events"
            )
        await limited(request, response, who, p)
        return who

    async def service_caller(
        request: Request,
        response: Response,
        who: Annotated[Principal, Depends(principal)],
        p: Annotated[Ports, Depends(ports)],
    ) -> Principal:
        if who.role not in ("service", "admin"):
            raise ApiError(
                403, "forbidden", "a service token is required: players report completions through tickets"
            )
        await limited(request, response, who, p)
        return who

    Player = Annotated[Principal, Depends(player)]
    Service = Annotated[Principal, Depends(service_caller)]
    P = Annotated[Ports, Depends(ports)]

    listing = domain.CatalogListing.model_validate({"actions": catalog.public()})

    @app.get(
        "/api/v1/catalog", tags=["actions"], response_model=domain.CatalogListing, responses=_errors(413)
    )
    async def get_catalog() -> domain.CatalogListing:
        """The action types: points, bounds for game backends, minimum duration and hourly cap."""
        return listing

    @app.post(
        "/api/v1/actions",
        status_code=201,
        tags=["actions"],
        response_model=domain.ActionStarted,
        responses=_errors(*AUTH_ERRORS),
    )
    async def start_action(body: domain.StartAction, who: Player, p: P) -> domain.ActionStarted:
        """Start an action: returns a single-use ticket (actionId) bound to the player and type."""
        return await p.service.start_action(who, body.action_type)

    @app.post(
        "/api/v1/score/update",
        status_code=202,
        tags=["actions"],
        response_model=domain.Accepted,
        response_model_exclude_none=True,
        responses={
            200: {"model": domain.Accepted, "description": "Applied (with ?wait=true)"},
            202: {"model": domain.Accepted, "description": "In the event log (Kafka acknowledged it)"},
            **_errors(*AUTH_ERRORS, 404, 409, 410),
        },
    )
    async def complete_action(
        request: Request,
        body: domain.CompleteAction,
        who: Player,
        p: P,
        response: Response,
        wait: Annotated[bool, Query(description="Wait (bounded) until the scorer applied it")] = False,
    ) -> domain.Accepted:
        """Complete a started action. 202 once the event is in the log; 200 with newScore when waited."""
        done = await p.service.complete_action(who, body, request_id(request), wait)
        if done.new_score is not None:
            response.status_code = 200
        return domain.Accepted(
            user_id=uuid.UUID(done.user_id),
            action_id=done.action_id,
            event_id=done.event_id,
            new_score=done.new_score,
        )

    @app.post(
        "/api/v1/events",
        status_code=202,
        tags=["service"],
        response_model=domain.BatchAccepted,
        responses=_errors(*AUTH_ERRORS),
    )
    async def submit_events(
        request: Request, body: domain.EventBatch, who: Service, p: P
    ) -> domain.BatchAccepted:
        """Game backends: up to 1,000 completed actions, atomically; repeats are reported as duplicates."""
        return await p.service.submit_events(who, body, request_id(request))

    @app.post(
        "/score",
        status_code=202,
        tags=["service"],
        response_model=domain.LegacyAccepted,
        responses=_errors(*AUTH_ERRORS),
    )
    async def legacy_score(
        request: Request, body: domain.LegacyScore, who: Service, p: P
    ) -> domain.LegacyAccepted:
        """Seed 004's endpoint: one completed action worth ``increment`` points (service tokens only)."""
        return await p.service.submit_legacy(who, body, request_id(request))

    @app.post(
        "/api/v1/dev/token",
        tags=["dev"],
        include_in_schema=settings.dev_mode,
        responses=_errors(404, 413, 429, 503),
    )
    async def dev_token(request: Request, response: Response, p: P) -> dict[str, str]:
        """Dev mode only: a player token for a fresh demo player (the demo page's button)."""
        if not settings.dev_mode:
            raise ApiError(404, "not_found", f"no route for POST {request.url.path}")
        decision = await p.limiter.check([Limit(f"devtoken:{_client_ip(request)}", 30, 10)])
        if not decision.allowed:
            raise ApiError(429, "rate_limited", "too many demo players from this address", decision.headers())
        sub = str(uuid.uuid4())
        name = f"{random.choice(_ADJECTIVES)} {random.choice(_ANIMALS)} {random.randint(10, 99)}"
        token = await asyncio.to_thread(mint_token, settings, sub=sub, role="player", name=name, ttl_s=3600)
        return {"token": token, "userId": sub, "username": name}

    async def ready() -> dict[str, str]:
        checks = {"redis": "ok", "kafka": "ok"}
        try:
            await asyncio.wait_for(app.state.redis.ping(), 2)
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
        try:
            await asyncio.wait_for(app.state.kafka.partitions_for(topics.actions), 3)
        except Exception as exc:
            checks["kafka"] = f"error: {type(exc).__name__}"
        return checks

    add_ops_routes(app, ready)
    return app


_ADJECTIVES = ["Swift", "Brave", "Clever", "Mighty", "Quiet", "Lucky", "Fierce", "Nimble", "Bold", "Sly"]
_ANIMALS = ["Fox", "Otter", "Falcon", "Lynx", "Badger", "Heron", "Wolf", "Panda", "Raven", "Tiger"]
