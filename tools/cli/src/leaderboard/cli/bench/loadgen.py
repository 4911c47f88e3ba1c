"""A closed-loop HTTP load generator: ``concurrency`` workers, each sending its next request as soon
as the previous one answered, for a bounded time and a bounded number of requests.

Why not wrk: it is not installed on these machines (and not on PyPI); when ``/usr/bin/wrk`` exists
the numbers are still taken with this generator, so the system and its baseline are always measured
by the same client. httpx was chosen over aiohttp because it is already a dependency of the CLI;
its per-request cost on the client side is part of what a 2-core machine measures, and it is the
same for the system and the baseline.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from leaderboard.cli.bench.stats import rate, summarize


@dataclass
class Hit:
    kind: str
    seconds: float
    status: int
    done_at: float
    units: int = 1  # events carried (a batch request carries many)


Step = Callable[[httpx.AsyncClient, int], Awaitable[list[Hit]]]


@dataclass
class LoadResult:
    window_s: float = 0.0
    hits: list[Hit] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def merge(self, other: LoadResult) -> None:
        self.window_s += other.window_s
        self.hits.extend(other.hits)
        self.errors.update(other.errors)

    def report(self, ok_status: dict[str, int]) -> dict[str, Any]:
        """Per request kind: requests/s, units/s, latency summary in ms, and non-OK answers."""
        out: dict[str, Any] = {"window_s": self.window_s}
        kinds = sorted({h.kind for h in self.hits})
        for kind in kinds:
            mine = [h for h in self.hits if h.kind == kind]
            good = [h for h in mine if h.status == ok_status.get(kind, 200)]
            bad = Counter(str(h.status) for h in mine if h.status != ok_status.get(kind, 200))
            out[kind] = {
                "requests": len(mine),
                "ok": len(good),
                "requests_per_s": rate(len(good), self.window_s),
                "units_per_s": rate(sum(h.units for h in good), self.window_s),
                "latency_ms": summarize((h.seconds for h in good), 1000),
                "not_ok": dict(bad),
            }
        all_good = [h for h in self.hits if h.status == ok_status.get(h.kind, 200)]
        out["total_requests_per_s"] = rate(len(all_good), self.window_s)
        out["transport_errors"] = dict(self.errors)
        return out


def _loopback_only(base_url: str) -> None:
    host = urlsplit(base_url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the benchmarks only send load to loopback, not {host!r}")


async def run_load(
    base_url: str,
    step: Step,
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    max_requests: int = 500_000,
) -> LoadResult:
    """Run ``step`` in ``concurrency`` loops for ``warmup_s + duration_s``; only what completes
    inside the measured window (after the warm-up) counts."""
    _loopback_only(base_url)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    result = LoadResult()
    sent = 0
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as client:
        start = time.perf_counter()
        measure_from = start + warmup_s
        stop_at = measure_from + duration_s

        async def worker(index: int) -> None:
            nonlocal sent
            while time.perf_counter() < stop_at and sent < max_requests:
                sent += 1
                try:
                    hits = await step(client, index)
                except httpx.HTTPError as exc:
                    if time.perf_counter() >= measure_from:
                        result.errors[type(exc).__name__] += 1
                    await asyncio.sleep(0.01)
                    continue
                result.hits.extend(h for h in hits if measure_from <= h.done_at <= stop_at)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        result.window_s = max(0.0, min(time.perf_counter(), stop_at) - measure_from)
    return result


async def timed_post(
    client: httpx.AsyncClient, kind: str, url: str, *, content: bytes, headers: dict[str, str], units: int = 1
) -> tuple[Hit, httpx.Response]:
    t0 = time.perf_counter()
    response = await client.post(url, content=content, headers=headers)
    t1 = time.perf_counter()
    return Hit(kind, t1 - t0, response.status_code, t1, units), response
