"""The body limit as an ASGI middleware, driven with hand-made ASGI messages (no server)."""

from __future__ import annotations

import json

from starlette.types import Message, Receive, Scope, Send

from leaderboard.ingest.adapters.ratelimit import Decision
from leaderboard.ingest.entrypoints.middleware import BufferedBodyLimit


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def call(limit: int, chunks: list[bytes], declared: int | None) -> tuple[int, bytes, int, list[str]]:
    headers = [(b"content-length", str(declared).encode())] if declared is not None else []
    scope = {"type": "http", "headers": headers, "method": "POST", "path": "/x"}
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)
    ]
    read = 0
    sent: list[Message] = []
    refused: list[str] = []

    async def receive() -> Message:
        nonlocal read
        if pending:
            read += 1
            return pending.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    async def on_refused(scope: Scope, message: str) -> None:
        refused.append(message)

    await BufferedBodyLimit(echo, limit=limit, on_refused=on_refused, drain=4096)(scope, receive, send)
    return sent[0]["status"], sent[1]["body"], read, refused


async def test_small_bodies_pass_whole() -> None:
    status, body, _, refused = await call(1024, [b"ab", b"cd"], None)
    assert (status, body, refused) == (200, b"abcd", [])


async def test_declared_too_large_is_refused_after_draining_what_fits() -> None:
    status, body, read, refused = await call(1024, [b"x" * 1000, b"x" * 1000], 2000)
    assert status == 413 and json.loads(body)["code"] == "too_large"
    assert read == 2 and refused  # drained, so the client can read the answer; the refusal is reported


async def test_chunked_body_growing_past_the_limit_is_refused() -> None:
    status, body, read, _ = await call(1024, [b"x" * 600, b"x" * 600, b"x" * 600], None)
    assert status == 413 and json.loads(body)["status"] == "error"
    assert read == 3


async def test_huge_uploads_are_not_drained() -> None:
    status, _, read, _ = await call(1024, [b"x" * 1000] * 50, 50_000)
    assert status == 413 and read == 0


def test_rate_limit_headers() -> None:
    allowed = Decision(True, 1, 4, 2, 10).headers()
    assert allowed == {"RateLimit-Limit": "10", "RateLimit-Remaining": "4", "RateLimit-Reset": "2"}
    refused = Decision(False, 3, 0, 5, 10).headers()
    assert refused["Retry-After"] == "3" and refused["RateLimit-Remaining"] == "0"


def test_encoding_problem_accepts_utf8_and_refuses_the_rest() -> None:
    from leaderboard.ingest.entrypoints.middleware import encoding_problem

    body = '{"actionType": "quest", "name": "Zoë 🦊"}'
    assert encoding_problem(body.encode()) is None
    for encoding in ("utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-8-sig"):
        assert encoding_problem(body.encode(encoding)) is not None, encoding
    assert encoding_problem(b'{"a": "\xff"}') is not None  # not UTF-8 at all
