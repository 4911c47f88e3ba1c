"""Lua script calls sent to Redis together: the calls made while one pipeline is on its way go in the
next one, so that concurrent completions share a write and a read instead of one each.

Why: under load (k6, issue 12) a completion's two Redis round trips (the claim, then the confirm after
Kafka's ack) were about a fifth of ingest's CPU, most of it the system calls of one write and one read
per command (and as many on Redis's side). With 32 completions in flight, several claims and confirms
are due in the same turn of the event loop; one pipeline carries them all.

Each call still runs as its own script, atomically and in the order the calls were made (a pipeline
without MULTI), and each caller gets its own reply or its own error, as a lone ``EVALSHA`` would give.
At most one pipeline is on its way at a time: calls made meanwhile wait for the next, which leaves as
soon as the previous one's replies are read, so an idle ingest adds no delay (the first call goes out
on the next turn of the loop). A connection error fails every call of that pipeline, as it would have
failed each of them alone (the client's own retry applies to the pipeline as to a command). A script
Redis does not know (``NOSCRIPT``: Redis restarted) is loaded and its calls run again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

Call = tuple[AsyncScript, Sequence[Any], Sequence[Any], "asyncio.Future[Any]"]


class ScriptBatcher:
    """Runs :class:`AsyncScript` calls through shared pipelines (see the module docstring)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._queue: list[Call] = []
        self._drainer: asyncio.Task[None] | None = None

    async def call(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """``script(keys=keys, args=args)``, sent with the other calls due now."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        self._queue.append((script, keys, args, done))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain(), name="redis-script-batches")
        return await done

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._run(batch)
        finally:
            self._drainer = None
            # Left only when the drainer was cancelled (shutdown): nobody will send these.
            left, self._queue = self._queue, []
            for *_, done in left:
                done.cancel()

    async def _run(self, batch: list[Call]) -> None:
        try:
            replies = await self._execute(batch)
            unknown = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
            if unknown:
                for script in {id(batch[i][0]): batch[i][0] for i in unknown}.values():
                    script.sha = await self.redis.script_load(script.script)
                for i, reply in zip(unknown, await self._execute([batch[i] for i in unknown]), strict=True):
                    replies[i] = reply
        except Exception as exc:
            for *_, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        except BaseException:
            for *_, done in batch:
                done.cancel()
            raise
        for (*_, done), reply in zip(batch, replies, strict=True):
            if done.done():
                continue  # its caller is gone (cancelled): the script ran all the same
            if isinstance(reply, Exception):
                done.set_exception(reply)
            else:
                done.set_result(reply)

    async def _execute(self, batch: list[Call]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies
