"""ASGI middleware of its own: the body limit and the body's encoding, applied before the app reads
anything.

Why not ``leaderboard.common.web.BodyLimitMiddleware``: it counts bytes while the app reads them, so a
chunked body (no Content-Length) that grows past the limit breaks FastAPI's body parsing mid-way
and the client gets FastAPI's 400 instead of 413. Buffering here is bounded by the limit itself,
which is small (the largest legal request is one batch of events).

A refused body is still read and discarded, up to ``drain`` bytes, before the 413 goes out: a server
that answers and closes while the client is still sending makes the kernel reset the connection,
and the client then loses the answer (it sees a broken pipe instead of 413). Past ``drain`` the
connection is simply closed after the answer, so a huge upload cannot keep a worker busy.

A body must be UTF-8 (RFC 8259 §8.1), without a byte-order mark: ``json.loads`` on bytes, which FastAPI
uses, would otherwise detect UTF-16 and UTF-32 and accept them. Such a body gets 422 ``invalid`` here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leaderboard.common.web import error_response

_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


def encoding_problem(body: bytes) -> str | None:
    """Why ``body`` is not a UTF-8 JSON text, or None when its encoding is acceptable."""
    if body.startswith(_BOMS):
        return "request body must be UTF-8 JSON without a byte-order mark"
    # UTF-16 or UTF-32 of ASCII text is valid UTF-8 full of NUL bytes; JSON never holds a raw NUL.
    if b"\x00" in body:
        return "request body must be UTF-8 JSON (it holds NUL bytes: UTF-16 or UTF-32?)"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"request body must be UTF-8 JSON (invalid byte at offset {exc.start})"
    return None


class BufferedBodyLimit:
    """Reads the whole body, at most ``limit`` bytes, before calling the app; refuses larger ones with 413."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        on_refused: Callable[[Scope, str], Awaitable[None]] | None = None,
        drain: int | None = None,
        on_invalid: Callable[[Scope, str], Awaitable[None]] | None = None,
    ) -> None:
        self.app, self.limit, self.on_refused, self.on_invalid = app, limit, on_refused, on_invalid
        self.drain = drain if drain is not None else max(8 * limit, 8 * 1024 * 1024)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [v for k, v in scope.get("headers", []) if k == b"content-length"]
        too_large = declared and (not declared[0].isdigit() or int(declared[0]) > self.limit)
        if too_large or len(set(declared)) > 1:
            fits = len(set(declared)) == 1 and declared[0].isdigit() and int(declared[0]) <= self.drain
            if fits:
                await self._discard(receive, 0)
            await self._refuse(scope, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                if message.get("more_body", False):
                    await self._discard(receive, size)
                await self._refuse(scope, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = encoding_problem(body) if body else None
        if problem is not None:
            if self.on_invalid is not None:
                await self.on_invalid(scope, problem)
            response = error_response(422, "invalid", problem)
            await send({"type": "http.response.start", "status": 422, "headers": response.raw_headers})
            await send({"type": "http.response.body", "body": response.body})
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _discard(self, receive: Receive, seen: int) -> None:
        """Read what the client is still sending, up to ``drain`` bytes in all, and drop it."""
        while seen <= self.drain:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = f"request body exceeds {self.limit} bytes"
        if self.on_refused is not None:
            await self.on_refused(scope, message)
        response = error_response(413, "too_large", message, {"Connection": "close"})
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
