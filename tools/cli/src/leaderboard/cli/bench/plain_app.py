"""The ingest benchmark's baseline: a plain FastAPI endpoint that only verifies the JWT and returns.

Run it with ``python -m leaderboard.cli.bench.plain_app --port PORT`` (settings from ``LEADERBOARD_*``,
as the services read them, so it verifies the same tokens with the same key). It is served by
uvicorn with the same options as ingest, so the difference between the two is what ingest does
beyond authentication: schemas, tickets and rate limits in Redis, and the Kafka acknowledgement.
"""

from __future__ import annotations

import argparse

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from leaderboard.common.auth import AuthError, TokenVerifier
from leaderboard.common.settings import CommonSettings


def create_app(settings: CommonSettings) -> FastAPI:
    verifier = TokenVerifier(settings)
    app = FastAPI(title="bench: JWT-only baseline", openapi_url=None, docs_url=None, redoc_url=None)

    @app.post("/verify")
    async def verify(request: Request) -> JSONResponse:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return JSONResponse({"status": "error", "code": "unauthorized"}, status_code=401)
        try:
            who = verifier.verify(token)
        except AuthError:
            return JSONResponse({"status": "error", "code": "unauthorized"}, status_code=401)
        return JSONResponse({"status": "success", "userId": who.sub})

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(CommonSettings()),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,  # as ingest runs it
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
