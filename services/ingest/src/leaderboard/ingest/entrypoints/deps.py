"""Ingest's FastAPI dependencies, importable and overridable (``app.dependency_overrides``): the ports
built by the lifespan, the client's IP, the request id, the caller (a verified bearer token, through the
shared :func:`leaderboard.common.web.bearer_principal`), role gates and rate limits.

Rate limits are GCRA in Redis (``adapters.ratelimit``): a player is limited per user and per client IP,
a service per subject only; a failed authentication is charged to the client IP, so that guessing
tokens is rate limited too.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Response
from starlette.types import Scope

from leaderboard.common.auth import AuthError, Principal, TokenVerifier
from leaderboard.common.catalog import Catalog
from leaderboard.common.web import bearer_principal, request_id
from leaderboard.ingest.adapters.ratelimit import Limit
from leaderboard.ingest.bootstrap import Ports
from leaderboard.ingest.errors import SLOW_DOWN, RateLimited, RoleRefused


def ports(request: Request) -> Ports:
    """The ports the lifespan built (``bootstrap``)."""
    p: Ports = request.app.state.ports
    return p


def maybe_ports(request: Request) -> Ports | None:
    """The ports, or None before the lifespan built them (an audit must not fail on that)."""
    p: Ports | None = getattr(request.app.state, "ports", None)
    return p


def catalog(request: Request) -> Catalog:
    """The action catalog, loaded when the app was created."""
    c: Catalog = request.app.state.catalog
    return c


def client_ip(request: Request) -> str:
    """The peer, or X-Forwarded-For's right-most untrusted hop behind a trusted proxy."""
    return scope_client_ip(request.scope, maybe_ports(request))


def scope_client_ip(scope: Scope, p: Ports | None) -> str:
    """:func:`client_ip` of an ASGI scope (the hot path has no ``Request``)."""
    client = scope.get("client")
    peer: str | None = client[0] if client else None
    if p is None:
        return peer or "unknown"
    forwarded = None
    for key, value in scope.get("headers", ()):
        if key == b"x-forwarded-for":
            forwarded = value.decode("latin-1")
            break
    return p.client_ip(peer, forwarded)


def _verifier(request: Request) -> TokenVerifier:
    return ports(request).verifier


# The dependencies themselves are coroutines: FastAPI runs a plain ``def`` dependency in its thread
# pool, a thread hop (and GIL contention) per dependency per request for what is an attribute read.
async def _ports_dep(request: Request) -> Ports:
    return ports(request)


async def _catalog_dep(request: Request) -> Catalog:
    return catalog(request)


async def _client_ip_dep(request: Request) -> str:
    return client_ip(request)


async def _request_id_dep(request: Request) -> str:
    return request_id(request)


async def charge_failed_auth(request: Request, refused: AuthError) -> None:
    """A refused token costs the client IP one request: :class:`RateLimited` once that runs out
    (else the shared dependency answers 401)."""
    s = ports(request).settings
    ip = Limit(f"ip:{client_ip(request)}", s.rate_ip_per_min, s.rate_ip_burst)
    decision = await ports(request).limiter.check([ip])
    if not decision.allowed:
        raise RateLimited(SLOW_DOWN, decision.headers())


principal = bearer_principal(
    _verifier,
    on_refused=charge_failed_auth,
    description="A JWT from your identity provider (dev: `leaderboard token`).",
)

PortsDep = Annotated[Ports, Depends(_ports_dep)]
CatalogDep = Annotated[Catalog, Depends(_catalog_dep)]
ClientIp = Annotated[str, Depends(_client_ip_dep)]
RequestId = Annotated[str, Depends(_request_id_dep)]
Authenticated = Annotated[Principal, Depends(principal)]


def limits_for(who: Principal, ip: str, p: Ports) -> list[Limit]:
    """A service (or admin) is limited per subject; a player per user and per client IP."""
    s = p.settings
    if who.role in ("service", "admin"):
        return [Limit(f"svc:{who.sub}", s.rate_service_per_min, s.rate_service_burst)]
    return [
        Limit(f"user:{who.sub}", s.rate_player_per_min, s.rate_player_burst),
        Limit(f"ip:{ip}", s.rate_ip_per_min, s.rate_ip_burst),
    ]


async def charge(who: Principal, ip: str, p: Ports) -> dict[str, str]:
    """Charge the caller's limits: :class:`RateLimited` when one is spent, else the RateLimit headers."""
    decision = await p.limiter.check(limits_for(who, ip, p))
    if not decision.allowed:
        raise RateLimited(SLOW_DOWN, decision.headers())
    return decision.headers()


async def rate_limit(response: Response, who: Principal, ip: str, p: Ports) -> None:
    """:func:`charge`, its RateLimit headers set on ``response``."""
    response.headers.update(await charge(who, ip, p))


def require_player(who: Principal) -> None:
    """The player routes' role gate: :class:`RoleRefused` for any other token."""
    if who.role != "player":
        raise RoleRefused("this endpoint is for player tokens; game backends use /api/v1/events")


def require_service(who: Principal) -> None:
    """The service routes' role gate: :class:`RoleRefused` unless a service (or admin) token."""
    if who.role not in ("service", "admin"):
        raise RoleRefused("a service token is required: players report completions through tickets")


async def player(request: Request, response: Response, who: Authenticated) -> Principal:
    """A player token, within its rate limits."""
    require_player(who)
    # Ports and client IP read directly, not as dependencies: each dependency costs FastAPI's
    # resolution machinery on every request.
    await rate_limit(response, who, client_ip(request), ports(request))
    return who


async def service_caller(request: Request, response: Response, who: Authenticated) -> Principal:
    """A service (or admin) token, within its rate limits."""
    require_service(who)
    await rate_limit(response, who, client_ip(request), ports(request))
    return who


Player = Annotated[Principal, Depends(player)]
Service = Annotated[Principal, Depends(service_caller)]
