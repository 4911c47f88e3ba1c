"""Bearer authentication from an ``Authorization`` header value, for any entrypoint.

:func:`authenticate` is written to move to ``leaderboard.common.auth`` unchanged (it depends on that
module alone), where the HTTP services' principal dependency can use it too: one way of reading a
bearer token, one rule for verifying off the event loop when the verifier may fetch keys."""

from __future__ import annotations

import asyncio

from leaderboard.common.auth import AuthError, Principal, TokenVerifier


def bearer_token(authorization: str | None) -> str:
    """The token of a ``Bearer`` credential; :class:`AuthError` when there is none."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise AuthError("a bearer token is required")
    return token.strip()


async def authenticate(authorization: str | None, verifier: TokenVerifier) -> Principal:
    """The principal of a valid bearer token; :class:`AuthError` (its reason) otherwise.

    A verifier that may fetch a JWKS over the network runs in a thread, so that a slow identity
    provider cannot stall the event loop."""
    token = bearer_token(authorization)
    if verifier.fetches_keys:
        return await asyncio.to_thread(verifier.verify, token)
    return verifier.verify(token)
