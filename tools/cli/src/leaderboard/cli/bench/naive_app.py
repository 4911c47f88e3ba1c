"""The benchmark's baseline: the design a studio would write by hand, in one FastAPI process.

- ``POST /score`` verifies the bearer JWT (pyjwt, EdDSA with the same dev public key the services
  use, decoded on every request: no cache), then ``ZINCRBY`` in Redis and an upsert in Postgres
  (``naive_scores``), one of each per request, and answers 200.
  Body ``{"userId": str, "points": int}``; a player's completion sends its own ``sub``.
- ``GET /leaderboard?page=1&limit=10``: ``ZREVRANGE`` with offsets, the entries as JSON.
- ``WS /ws``: polls Redis every 100 ms (``--poll-interval``) with ``ZREVRANGE 0 9`` and pushes the
  top 10 when it changed (one poll loop per connection, as such code usually is).

Run it with ``python -m leaderboard.cli.bench.naive_app --port PORT``; settings come from
``LEADERBOARD_*`` like the services (Redis URL and key prefix, Postgres DSN, keys directory, issuer,
audience), so it shares the bench namespace's Redis and Postgres. It is served by uvicorn with the
services' own options (httptools with the same head bounds, no access log, the broadcaster's
WebSocket protocol options).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import jwt
import uvicorn
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from redis.asyncio import BlockingConnectionPool, Redis

from leaderboard.common.auth import ensure_dev_keys
from leaderboard.common.settings import CommonSettings, HttpServiceSettings

SCHEMA = """
CREATE TABLE IF NOT EXISTS naive_scores (
    user_id text PRIMARY KEY,
    score bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""
UPSERT = """
INSERT INTO naive_scores (user_id, score) VALUES ($1, $2)
ON CONFLICT (user_id) DO UPDATE SET score = naive_scores.score + EXCLUDED.score, updated_at = now()
"""


def board_key(settings: CommonSettings) -> str:
    return f"{settings.redis_prefix}:naive:board"


def create_app(settings: CommonSettings, poll_interval_s: float = 0.1) -> FastAPI:
    _, public_path = ensure_dev_keys(settings.keys_dir)
    public_key = serialization.load_pem_public_key(public_path.read_bytes())
    key = board_key(settings)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(settings.postgres_dsn, min_size=2, max_size=10)
        async with pool.acquire() as conn:
            await conn.execute(SCHEMA)
        # Requests past 100 in flight wait for a Redis connection, as they wait for one of Postgres's
        # 10 (redis-py's default pool raises "Too many connections" instead under open-loop load).
        redis = Redis.from_pool(
            BlockingConnectionPool.from_url(settings.redis_url, max_connections=100, timeout=None)
        )
        state.update(pool=pool, redis=redis)
        try:
            yield
        finally:
            await redis.aclose()
            await pool.close()

    app = FastAPI(
        title="bench: naive design", openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan
    )

    def unauthorized() -> JSONResponse:
        return JSONResponse({"status": "error", "code": "unauthorized"}, status_code=401)

    @app.post("/score")
    async def score(request: Request) -> JSONResponse:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return unauthorized()
        try:
            jwt.decode(
                token,
                public_key,  # type: ignore[arg-type]
                algorithms=["EdDSA"],
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.PyJWTError:
            return unauthorized()
        body = await request.json()
        user, points = str(body["userId"]), int(body["points"])
        new_score = await state["redis"].zincrby(key, points, user)
        await state["pool"].execute(UPSERT, user, points)
        return JSONResponse({"status": "success", "userId": user, "score": int(new_score)})

    @app.get("/leaderboard")
    async def leaderboard(page: int = 1, limit: int = 10) -> JSONResponse:
        start = (max(page, 1) - 1) * limit
        rows = await state["redis"].zrevrange(key, start, start + limit - 1, withscores=True)
        entries = [
            {"rank": start + i + 1, "userId": member.decode(), "score": int(score)}
            for i, (member, score) in enumerate(rows)
        ]
        return JSONResponse({"leaderboard": entries, "page": page, "limit": limit})

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        last: Any = None
        try:
            while True:
                rows = await state["redis"].zrevrange(key, 0, 9, withscores=True)
                if rows != last:
                    last = rows
                    top = [{"userId": m.decode(), "score": int(s)} for m, s in rows]
                    await websocket.send_text(json.dumps({"type": "update", "top": top}))
                await asyncio.sleep(poll_interval_s)
        except (WebSocketDisconnect, RuntimeError):
            pass

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--poll-interval", type=float, default=0.1)
    args = parser.parse_args()
    settings = HttpServiceSettings()
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(
            create_app(settings, args.poll_interval),
            **settings.uvicorn_options(args.port),
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            timeout_graceful_shutdown=3,
            backlog=4096,
        )


if __name__ == "__main__":
    main()
