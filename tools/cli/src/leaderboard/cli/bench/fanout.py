"""Fan-out: the delay from a board change being published to its WebSocket frame arriving at each
of N connected clients (N = 1,000, 5,000, 10,000 by default), and the server's memory per connection.

Set-up per N and run (``--runs``; the figures are the median of the runs, min and max beside it): a
fresh ``leaderboard broadcaster`` process, and a fresh baseline server, which goes first every
other run; the bench publishes ``BoardChanged`` events (a top 10) the way the scorer announces them: the record to ``leaderboard.changes.v1`` and,
at the same time, the same bytes on the Redis pub/sub channel ``boardkeys.changes_channel(prefix)``
(the broadcaster applies whichever copy arrives first; in practice the pub/sub one). What is
measured is the broadcaster alone: receive, adopt, fan out. The clients are python-websockets
connections spread over worker processes (``clients_per_worker`` each; this module is also the
worker), all on this machine, so their own CPU is part of the figure on a small box. Delays compare
wall-clock stamps taken in different processes on one machine: the publisher's just before the
sends, the client's as ``recv`` returns. A client keeps a frame as bytes and reads only its
``version`` (:func:`frame_version`), so the time it spends per frame does not grow with the frame.

Figures, per N:
- ``frame_delay_ms``: per (client, change), publish -> frame received;
- ``last_client_ms``: per change, publish -> the frame reaching the *last* of the N clients
  (the whole fan-out);
- ``memory_per_connection_kib``: (server RSS with N clients holding a snapshot - RSS before
  they connected) / N;
- ``missed``: frames a client never got (coalesced because it was behind), ``coalesced`` and
  ``dropped`` from the broadcaster's own counters.

Baseline (``baseline_broadcast``, at every size): a bare python-websockets server that takes its
feed from the same Redis pub/sub channel (so both servers get each change from the same source, at
the same moment) and hands each frame to every client with ``websockets.broadcast`` (no versions,
resume or coalescing), with the same clients. The clients are Python, not k6 (one k6 VU per
connection would not fit 10,000 connections in this machine's memory); their CPU is sampled beside
the server's (``headroom``), and when the clients used more than the server, the delay is partly
theirs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import psutil

from leaderboard.cli.bench import k6
from leaderboard.cli.bench.common import Context, quiet_gc, until
from leaderboard.cli.bench.figures import figure
from leaderboard.cli.bench.stats import summarize
from leaderboard.common.boardkeys import changes_channel
from leaderboard.common.events import BoardChanged, RankedEntry
from leaderboard.common.kafka import ensure_topics, new_producer
from leaderboard.common.ranking import changed_entries
from leaderboard.common.redis import new_redis
from leaderboard.common.settings import CommonSettings
from leaderboard.common.topics import Topics
from leaderboard.testkit.processes import free_port
from leaderboard.testkit.services import ServiceSpec, Supervisor, leaderboard_cmd
from leaderboard.testkit.testing import Namespace

BASELINE = "bare websockets broadcast server"


def run(ctx: Context) -> dict[str, Any]:
    ns = ctx.namespace()
    try:
        return asyncio.run(_run(ctx, ns))
    finally:
        ns.drop()


async def _run(ctx: Context, ns: Namespace) -> dict[str, Any]:
    settings = ns.settings()
    await ensure_topics(settings)
    out: dict[str, Any] = {
        "changes_per_size": ctx.sizes.changes,
        "clients_per_worker": ctx.sizes.clients_per_worker,
        "source": "BoardChanged published to the changes topic and, the same bytes, on the Redis "
        "pub/sub channel (as the scorer does); frames timed at the clients",
    }
    producer = new_producer(settings, linger_ms=0)
    await producer.start()
    redis = new_redis(settings)
    publisher = _Publisher(
        producer, Topics(settings.topic_prefix).changes, redis, changes_channel(settings.redis_prefix)
    )
    baseline: dict[str, list[dict[str, Any]]] = {}
    try:
        for n in ctx.sizes.clients:
            mine_runs: list[dict[str, Any]] = []
            bare_runs: list[dict[str, Any]] = []
            for run in range(ctx.sizes.runs):
                # Which server goes first alternates between runs, so a drift of the machine over a
                # size's runs does not land on one of them.
                order = (False, True) if run % 2 == 0 else (True, False)
                for naive in order:
                    name = f"fanout-{'bare-' if naive else ''}{n}-{run}"
                    supervisor = Supervisor()
                    try:
                        start = _start_naive if naive else _start_broadcaster
                        port = start(supervisor, ns.env, ctx, name)
                        pid = supervisor.running[name].proc.pid
                        measured = await _measure(ctx, publisher, port, n, pid, naive=naive)
                    finally:
                        supervisor.stop_all()
                    (bare_runs if naive else mine_runs).append(measured)
            out[f"clients_{n}"], baseline[f"clients_{n}"] = mine_runs, bare_runs
    finally:
        await producer.stop()
        await redis.aclose()
    out["baseline_broadcast"] = baseline
    figures: list[dict[str, Any]] = []
    for n in ctx.sizes.clients:
        mine, theirs = out[f"clients_{n}"], baseline[f"clients_{n}"]
        for q in ("p50", "p99"):
            figures.append(
                figure(
                    f"fanout_{q}_ms_at_{n}",
                    f"fan-out delay {q} at {n:,} clients",
                    "ms",
                    "lower",
                    [r["frame_delay_ms"][q] for r in mine],
                    [r["frame_delay_ms"][q] for r in theirs],
                    BASELINE,
                )
            )
        figures.append(
            figure(
                f"fanout_memory_kib_at_{n}",
                f"memory per connection at {n:,} clients",
                "KiB",
                "lower",
                [r["memory_per_connection_kib"] for r in mine],
                [r["memory_per_connection_kib"] for r in theirs],
                BASELINE,
            )
        )
    runs = [(f"project@{n}", r) for n in ctx.sizes.clients for r in out[f"clients_{n}"]]
    runs += [(f"bare@{n}", r) for n in ctx.sizes.clients for r in baseline[f"clients_{n}"]]
    out["figures"] = figures
    out["headroom"] = {
        "bottleneck_in": sorted({name for name, r in runs if r["headroom"]["generator_bottleneck"]}),
        "max_generator": max(
            (r["headroom"] for _, r in runs), key=lambda h: h["generator_cores"], default=None
        ),
    }
    return out


def _start_broadcaster(supervisor: Supervisor, env: dict[str, str], ctx: Context, name: str) -> int:
    port = free_port()
    spec = ServiceSpec(
        name,
        leaderboard_cmd("broadcaster", "--port", str(port)),
        # Reconciling with Redis is off: every frame must come from the change that was timed.
        {**env, "LEADERBOARD_RECONCILE_INTERVAL_S": "3600"},
        f"http://127.0.0.1:{port}/readyz",
        ctx.log_dir("fanout") / f"{name}.log",
    )
    supervisor.start(spec)
    supervisor.wait_ready(name)
    return port


def _start_naive(supervisor: Supervisor, env: dict[str, str], ctx: Context, name: str) -> int:
    port = free_port()
    spec = ServiceSpec(
        name,
        [sys.executable, "-m", "leaderboard.cli.bench.fanout", "naive-server", "--port", str(port)],
        env,
        f"http://127.0.0.1:{port}/readyz",
        ctx.log_dir("fanout") / f"{name}.log",
    )
    supervisor.start(spec)
    supervisor.wait_ready(name)
    return port


class _Publisher:
    """Publishes versions of one board under a fresh epoch per run, as the scorer announces them
    (the topic and the pub/sub channel, the same bytes, at once, ``changed`` the scorer's rank diff
    from the previous top); remembers when each was sent."""

    def __init__(self, producer: Any, topic: str, redis: Any, channel: str) -> None:
        self.producer, self.topic = producer, topic
        self.redis, self.channel = redis, channel
        self.epoch, self.version = "", 0
        self.sent_at: dict[int, float] = {}
        self.top: list[RankedEntry] = []
        self.users = [uuid.uuid4() for _ in range(12)]

    def reset(self) -> None:
        self.epoch, self.version, self.sent_at, self.top = uuid.uuid4().hex[:12], 0, {}, []

    async def publish(self) -> int:
        self.version += 1
        v = self.version
        order = self.users[v % 3 : v % 3 + 10]  # ranks move every time
        top = [
            RankedEntry(rank=i + 1, user_id=u, username=f"Player {u.hex[:6]}", score=10_000 + v * 10 - i)
            for i, u in enumerate(order)
        ]
        # ``changed`` as the scorer computes it (every entry here moves, so every id): the bare server
        # forwards this record as it is, so it must say what a real announcement of this top says.
        changed = changed_entries(self.top, top)
        self.top = top
        event = BoardChanged(
            board="global", epoch=self.epoch, version=v, top=top, changed=changed, at=datetime.now(UTC)
        )
        payload = event.to_bytes()
        self.sent_at[v] = time.time()
        sent = await self.producer.send(self.topic, payload, key=b"global")
        await asyncio.gather(sent, self.redis.publish(self.channel, payload))
        return v


async def _buckets(port: int) -> dict[float, float]:
    """The broadcaster's own fan-out histogram: upper bound (s) -> cumulative count."""
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(f"http://127.0.0.1:{port}/metrics")
    out: dict[float, float] = {}
    for line in r.text.splitlines():
        if line.startswith("broadcaster_fanout_seconds_bucket{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[math.inf if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def _bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound of the histogram bucket holding quantile ``q`` of what was added in between
    (a bound, as Prometheus buckets give; None when nothing was observed)."""
    counts = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = counts[-1][1] if counts else 0.0
    if total <= 0:
        return None
    for le, cumulative in counts:
        if cumulative >= q * total:
            return le * 1000
    return None


async def _metric(port: int, name: str) -> float:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.get(f"http://127.0.0.1:{port}/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in r.text.splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    )


async def _measure(
    ctx: Context, publisher: _Publisher, port: int, n: int, pid: int, naive: bool = False
) -> dict[str, Any]:
    publisher.reset()
    await publisher.publish()  # the snapshot every client starts from
    url = f"ws://127.0.0.1:{port}/ws/leaderboard"

    async def holds_first() -> bool:
        return await _worker_probe(url, publisher.epoch)

    await until(holds_first, 60, 0.1, "the server to hold the first version")
    server = psutil.Process(pid)
    rss_before = server.memory_info().rss

    per_worker = ctx.sizes.clients_per_worker
    counts = [per_worker] * (n // per_worker) + ([n % per_worker] if n % per_worker else [])
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "leaderboard.cli.bench.fanout",
            "worker",
            "--url",
            url,
            "--clients",
            str(c),
            "--epoch",
            publisher.epoch,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 26,  # the report is one JSON line of every arrival time
        )
        for c in counts
    ]
    try:
        for w in workers:
            assert w.stdout is not None
            line = await asyncio.wait_for(w.stdout.readline(), 300)
            if line.strip() != b"ready":
                raise RuntimeError(f"a fan-out worker failed to connect its clients: {line!r}")
        await asyncio.sleep(1.0)
        rss_after = server.memory_info().rss
        watched = {f"client:{i}": psutil.Process(w.pid) for i, w in enumerate(workers)}
        watched["system:server"] = server
        cpu0 = k6.sample(watched)
        buckets0 = {} if naive else await _buckets(port)
        coalesced0 = 0.0 if naive else await _metric(port, "broadcaster_coalesced_total")
        dropped0 = 0.0 if naive else await _metric(port, "broadcaster_dropped_total")

        # Changes spaced so that a fan-out normally completes before the next one starts.
        spacing = 0.3 + n * 0.0004
        for _ in range(ctx.sizes.changes):
            await publisher.publish()
            await asyncio.sleep(spacing)
        final = publisher.version
        for w in workers:
            assert w.stdin is not None
            w.stdin.write(f"{final}\n".encode())
            await w.stdin.drain()
        reports = []
        for w in workers:
            assert w.stdout is not None
            reports.append(json.loads(await asyncio.wait_for(w.stdout.readline(), 300)))
            if len(reports) == 1:
                cpu1 = k6.sample(watched)  # before the first worker exits and its CPU is gone
        buckets = {} if naive else await _buckets(port)
        coalesced = (0.0 if naive else await _metric(port, "broadcaster_coalesced_total")) - coalesced0
        dropped = (0.0 if naive else await _metric(port, "broadcaster_dropped_total")) - dropped0
    finally:
        for w in workers:
            if w.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    w.kill()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(w.wait(), 10)

    timed = range(2, final + 1)
    delays: list[float] = []
    last: list[float] = []
    missed = 0
    for v in timed:
        arrivals = [t for r in reports for t in r["arrivals"].get(str(v), [])]
        missed += n - len(arrivals)
        delays += [t - publisher.sent_at[v] for t in arrivals]
        if len(arrivals) == n:
            last.append(max(arrivals) - publisher.sent_at[v])
    cpu = k6.cpu_between(cpu0, cpu1)
    per_client = [v for k, v in cpu["cores"].items() if k.startswith("client:")]
    clients_cores = sum(per_client)
    result: dict[str, Any] = {
        "clients": n,
        "headroom": k6.headroom(
            clients_cores,
            cpu["cores"]["system:server"],
            cpu["machine_busy"],
            generator="python websocket clients",
            busiest_generator_process=max(per_client, default=0.0),
        ),
        "workers": len(workers),
        "changes": len(timed),
        "frame_delay_ms": summarize(delays, 1000),
        "last_client_ms": summarize(last, 1000),
        "missed": missed,
        "connect_failures": sum(r["failures"] for r in reports),
        "rss_before_mib": round(rss_before / 2**20, 1),
        "rss_with_clients_mib": round(rss_after / 2**20, 1),
        "memory_per_connection_kib": round((rss_after - rss_before) / n / 1024, 1),
    }
    if not naive:
        # The server's share: from the change reaching the broadcaster to its frame being handed to
        # each socket, as bucket bounds from the broadcaster's own histogram.
        result["server_fanout_bound_ms"] = {
            "p50_at_most": _bucket_quantile(buckets0, buckets, 0.5),
            "p99_at_most": _bucket_quantile(buckets0, buckets, 0.99),
        }
        result["coalesced"] = coalesced
        result["dropped"] = dropped
    return result


async def _worker_probe(url: str, epoch: str) -> bool:
    import websockets

    try:
        async with websockets.connect(url, open_timeout=10, compression=None) as ws:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 2))
            return bool(frame.get("epoch") == epoch)
    except (OSError, TimeoutError, websockets.WebSocketException):
        return False


# --- worker: N clients in one process ------------------------------------------------------------

VERSION = re.compile(rb'"version":(\d+)')


def frame_version(raw: bytes) -> int:
    """A frame's ``version``, read from its bytes without decoding or parsing the frame. Every frame
    a client reads here is timed, and one worker reads up to ``clients_per_worker`` frames per change:
    a UTF-8 decode and a full ``json.loads`` per frame would add the client's time, growing with the
    frame's size, to the server's. Both servers write ``version`` before ``top``, and a quote inside a
    JSON string is escaped, so the first match is the frame's own field."""
    found = VERSION.search(raw)
    if found is None:
        raise ValueError(f"a frame without a version: {raw[:80]!r}")
    return int(found[1])


async def _worker(url: str, clients: int, epoch: str) -> None:
    import websockets

    arrivals: dict[int, list[float]] = {}
    last = [0] * clients
    failures = 0
    ready = 0
    all_ready = asyncio.Event()
    gate = asyncio.Semaphore(100)

    def one_ready() -> None:
        nonlocal ready
        ready += 1
        if ready == clients:
            all_ready.set()

    async def client(i: int) -> None:
        nonlocal failures
        try:
            async with gate:
                ws = await websockets.connect(url, open_timeout=120, compression=None, ping_interval=None)
        except (OSError, TimeoutError, websockets.WebSocketException):
            failures += 1
            one_ready()
            return
        async with ws:
            while (frame := json.loads(await ws.recv()))["epoch"] != epoch:
                pass
            last[i] = frame["version"]
            one_ready()
            while True:
                raw = await ws.recv(decode=False)
                now = time.time()
                last[i] = version = frame_version(raw)
                arrivals.setdefault(version, []).append(now)

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await all_ready.wait()
    with quiet_gc():  # arrival stamps not paused by this worker's collector (bench.common)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        final = int(line)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
            t.done() or last[i] >= final for i, t in enumerate(tasks)
        ):
            await asyncio.sleep(0.05)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    sys.stdout.write(json.dumps({"arrivals": arrivals, "failures": failures}) + "\n")
    sys.stdout.flush()


# --- baseline server: bare websockets broadcast ----------------------------------------------------


async def _naive(port: int) -> None:
    """A websockets server that follows the board-change pub/sub channel (the broadcaster's own live
    path) and hands each frame to every client with ``websockets.broadcast`` (a non-blocking write
    per connection), plus a /readyz for the supervisor."""
    from http import HTTPStatus

    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.http11 import Request, Response

    settings = CommonSettings()
    clients: set[ServerConnection] = set()
    latest: list[str] = []
    ready = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        if latest:
            await ws.send(latest[0])
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    def health(conn: ServerConnection, request: Request) -> Response | None:
        if request.path.startswith("/readyz"):
            ok = ready.is_set()
            return conn.respond(HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE, "ok\n")
        return None

    redis = new_redis(settings, socket_timeout=None)
    try:
        async with redis.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(changes_channel(settings.redis_prefix))
            async with serve(
                handler, "127.0.0.1", port, process_request=health, compression=None, backlog=4096
            ):
                ready.set()
                async for message in pubsub.listen():
                    change = json.loads(message["data"])
                    frame = json.dumps(
                        {
                            "type": "update",
                            "board": change["board"],
                            "epoch": change["epoch"],
                            "version": change["version"],
                            "top": change["top"],
                            "changed": change["changed"],
                        },
                        separators=(",", ":"),
                    )
                    latest[:] = [frame]
                    broadcast(clients, frame)
    finally:
        await redis.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m leaderboard.cli.bench.fanout")
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="hold N WebSocket clients and time their frames")
    w.add_argument("--url", required=True)
    w.add_argument("--clients", type=int, required=True)
    w.add_argument("--epoch", required=True)
    s = sub.add_parser("naive-server", help="the bare broadcast baseline server")
    s.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.cmd == "worker":
        asyncio.run(_worker(args.url, args.clients, args.epoch))
    else:
        asyncio.run(_naive(args.port))


if __name__ == "__main__":
    main()
