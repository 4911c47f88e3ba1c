"""What every benchmark section shares: the run's context, the bench catalog and limits, the
machine description, helpers to start extra processes and to wait on Postgres and Redis.

Only loopback addresses are used: the stack and every service listen on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import platform
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import psutil

from leaderboard.testkit.processes import free_port
from leaderboard.testkit.services import ServiceSpec, Supervisor
from leaderboard.testkit.testing import Namespace


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """No cyclic garbage collection in a measuring client while it measures.

    The bench's own clients (the end-to-end markers and watcher, the fan-out workers) stamp arrival
    times; a full collection in one of them paused it for 100-690 ms (a ``gc.callbacks`` probe over
    ``make bench``), which would be charged to whichever server it was timing. Their measurement
    windows last seconds to a minute, so what they leave is freed by reference counting or at the
    collection afterwards."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()
        gc.collect()


BENCH_TYPE = "bench"
BENCH_POINTS = 10
# Loopback load tests must not be throttled: every limit far above what one machine can send.
UNLIMITED = {
    "LEADERBOARD_RATE_PLAYER_PER_MIN": "100000000",
    "LEADERBOARD_RATE_PLAYER_BURST": "10000000",
    "LEADERBOARD_RATE_SERVICE_PER_MIN": "100000000",
    "LEADERBOARD_RATE_SERVICE_BURST": "10000000",
    "LEADERBOARD_RATE_IP_PER_MIN": "100000000",
    "LEADERBOARD_RATE_IP_BURST": "10000000",
    "LEADERBOARD_SERVICE_CAPS": "off",  # load floods one user and type through the service path
}


@dataclass
class Sizes:
    """How big each section runs; ``quick`` shrinks all of them for a smoke run."""

    quick: bool = False
    runs: int = 3  # each headline figure is the median of this many runs (min and max beside it)
    # http: closed-loop runs of ``duration_s`` with ``vus`` k6 virtual users
    duration_s: float = 6.0
    vus: int = 32
    players: int = 64
    tickets: int = 5_000  # distinct valid tickets completed per run
    batch_events: int = 100
    users: int = 5_000  # the user pool of service batches and naive writes (page 50 needs >= 510)
    # scorer: catch-up on a backlog
    events: int = 100_000
    batch_size: int = 2_000
    # end to end: open-loop load at each rate, markers timed from their 2xx to the frame showing them
    e2e_rates: list[int] = field(default_factory=lambda: [100, 500, 2_000])
    # A run's p99 is only as good as its marker count: 6 s gave 50-80 markers, so a run's "p99" was
    # its worst marker or two; 15 s gives ~130-300. The pause between markers spans a whole poll
    # interval, so that the naive design's markers fall at uniformly random phases of its poller (a
    # shorter pause puts them early in a poll period and its delays grow: p50 48 -> 70 ms).
    e2e_duration_s: float = 15.0
    marker_interval_s: float = 0.1
    poll_interval_s: float = 0.1
    # fan-out
    clients: list[int] = field(default_factory=lambda: [1_000, 5_000, 10_000])
    changes: int = 12
    clients_per_worker: int = 1_250

    @classmethod
    def make(cls, quick: bool, runs: int | None = None) -> Sizes:
        sizes = cls()
        if quick:
            sizes = cls(
                quick=True,
                runs=1,
                duration_s=2.0,
                vus=8,
                players=8,
                tickets=300,
                users=700,
                events=5_000,
                e2e_duration_s=2.0,
                clients=[50, 200],
                changes=4,
                clients_per_worker=100,
            )
        if runs is not None:
            if runs < 1:
                raise ValueError("runs must be at least 1")
            sizes.runs = runs
        return sizes


@dataclass
class Context:
    """One benchmark run: the stack's environment, where logs go, and the sizes."""

    env: dict[str, str]
    work: Path
    logs: Path
    sizes: Sizes
    catalog_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.catalog_file = write_catalog(self.work / "bench-catalog.toml")

    def namespace(self, **overrides: str) -> Namespace:
        base = {
            **self.env,
            **UNLIMITED,
            "LEADERBOARD_CATALOG_FILE": str(self.catalog_file),
            "LEADERBOARD_LOG_LEVEL": "WARNING",
            "LEADERBOARD_BATCH_SIZE": str(self.sizes.batch_size),
        }
        return Namespace.create(base, **overrides)

    def log_dir(self, name: str) -> Path:
        path = self.logs / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def write_catalog(path: Path) -> Path:
    """The packaged catalog plus a ``bench`` type that can be completed at once and has no cap,
    so the player path measures the service rather than the pacing rules."""
    default = resources.files("leaderboard.common").joinpath("catalog.default.toml").read_text()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        default
        + f"""
# Benchmarks only: no minimum duration, no hourly cap.
[actions.{BENCH_TYPE}]
points = {BENCH_POINTS}
max_points = 1000
min_seconds = 0
per_hour = 0
ttl_seconds = 900
"""
    )
    return path


def start_extra(
    supervisor: Supervisor, name: str, module: str, args: list[str], env: dict[str, str], log_dir: Path
) -> int:
    """Start ``python -m module --port P args`` under ``supervisor`` and wait for its /readyz; returns P."""
    port = free_port()
    spec = ServiceSpec(
        name,
        [sys.executable, "-m", module, "--port", str(port), *args],
        env,
        f"http://127.0.0.1:{port}/readyz",
        log_dir / f"{name}.log",
    )
    supervisor.start(spec)
    supervisor.wait_ready(name)
    return port


def raise_open_files(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards ``wanted`` (never past the hard limit); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    return {
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_total_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


async def until(
    predicate: Callable[[], Awaitable[bool]], timeout: float, interval: float = 0.05, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
