"""``leaderboard``: the one CLI for operators and developers.

leaderboard dev          embedded stack + the three services + demo traffic (what `make run` runs)
leaderboard stack        only the embedded Kafka, Redis and Postgres; prints the exports
leaderboard ingest|scorer|broadcaster   one service against the configured stack
leaderboard token --sub ID --role player|service|admin [--name N] [--ttl S]
leaderboard simulate | replay | rebuild-cache | board
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import click

from leaderboard.common.logs import setup_logging

DATA_DIR = Path(".leaderboard")


@click.group()
def cli() -> None:
    """Live leaderboard: event-sourced services on Kafka, Redis and Postgres."""


@cli.command()
@click.option("--port", type=int, default=None, help="Listen port (default LEADERBOARD_PORT or 8080).")
def ingest(port: int | None) -> None:
    """Run the ingest API (write side)."""
    from leaderboard.ingest.main import run

    run(port)


@cli.command()
@click.option("--web-port", type=int, default=None, help="Health/metrics port (default 6066).")
def scorer(web_port: int | None) -> None:
    """Run one scorer worker (Faust)."""
    from leaderboard.scorer.main import run

    run(web_port)


@cli.command()
@click.option("--port", type=int, default=None, help="Listen port (default LEADERBOARD_PORT or 8090).")
def broadcaster(port: int | None) -> None:
    """Run the broadcaster (reads, WebSocket, SSE, demo page)."""
    from leaderboard.broadcaster.main import run

    run(port)


@cli.command()
@click.option("--sub", required=True, help="Subject: the user id (a UUID).")
@click.option(
    "--role", type=click.Choice(["player", "service", "admin"]), default="player", show_default=True
)
@click.option("--name", default=None, help="Display name (the `name` claim).")
@click.option("--ttl", type=int, default=3600, show_default=True, help="Lifetime in seconds.")
def token(sub: str, role: str, name: str | None, ttl: int) -> None:
    """Print a JWT signed with the dev key (the bare token is the last line)."""
    from leaderboard.common.auth import mint_token
    from leaderboard.common.settings import CommonSettings

    try:
        sub = str(uuid.UUID(sub))
    except ValueError as exc:
        raise click.BadParameter("must be a UUID", param_hint="--sub") from exc
    settings = CommonSettings()
    if ttl > settings.jwt_max_lifetime_s:
        raise click.BadParameter(
            f"at most {settings.jwt_max_lifetime_s}s (LEADERBOARD_JWT_MAX_LIFETIME_S)", param_hint="--ttl"
        )
    click.echo(mint_token(settings, sub=sub, role=role, name=name, ttl_s=ttl))  # type: ignore[arg-type]


def stack_ports(func: Callable[..., None]) -> Callable[..., None]:
    for name, default in (("postgres", 15432), ("redis", 16379), ("kafka", 19092)):
        func = click.option(
            f"--{name}-port",
            type=int,
            default=default,
            show_default=True,
            help=f"Embedded {name} port (127.0.0.1).",
        )(func)
    return func


@cli.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR / "stack", show_default=True)
@stack_ports
def stack(data_dir: Path, kafka_port: int, redis_port: int, postgres_port: int) -> None:
    """Start only the embedded Kafka, Redis and Postgres and print the LEADERBOARD_* exports. Ctrl-C stops them."""
    setup_logging("INFO", "stack")
    from leaderboard.testkit.stack import EmbeddedStack, StackPorts

    embedded = EmbeddedStack(data_dir, StackPorts(kafka_port, redis_port, postgres_port))
    _stop_on_signals()
    try:
        exports = embedded.start()
        for key, value in exports.items():
            click.echo(f"export {key}={value}")
        click.echo("# embedded stack running (ephemeral: empty on every start); Ctrl-C stops it", err=True)
        while True:
            time.sleep(3600)
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        embedded.stop()


class _Stop(Exception):
    pass


def _stop_on_signals() -> None:
    def handler(signum: int, frame: object) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@cli.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=DATA_DIR, show_default=True)
@click.option("--ingest-port", type=int, default=8080, show_default=True)
@click.option("--broadcaster-port", type=int, default=8090, show_default=True)
@click.option("--scorer-port", type=int, default=6066, show_default=True)
@click.option(
    "--scorers", type=int, default=1, show_default=True, help="Scorer replicas (one consumer group)."
)
@click.option("--demo/--no-demo", default=True, show_default=True, help="Gentle simulated traffic.")
@stack_ports
def dev(
    data_dir: Path,
    ingest_port: int,
    broadcaster_port: int,
    scorer_port: int,
    scorers: int,
    demo: bool,
    kafka_port: int,
    redis_port: int,
    postgres_port: int,
) -> None:
    """Embedded stack + ingest + scorer + broadcaster + demo traffic, in the foreground."""
    setup_logging("INFO", "dev")
    from leaderboard.common.auth import ensure_dev_keys
    from leaderboard.common.settings import CommonSettings
    from leaderboard.testkit.services import Supervisor, service_specs
    from leaderboard.testkit.stack import EmbeddedStack, StackPorts

    data_dir = data_dir.resolve()
    keys_dir = Path(os.environ.get("LEADERBOARD_KEYS_DIR", data_dir / "keys")).resolve()
    ensure_dev_keys(keys_dir)
    embedded = EmbeddedStack(data_dir / "stack", StackPorts(kafka_port, redis_port, postgres_port))
    supervisor = Supervisor()
    _stop_on_signals()
    try:
        exports = embedded.start()
        env = {
            **os.environ,
            **exports,
            "LEADERBOARD_DEV_MODE": "true",
            "LEADERBOARD_KEYS_DIR": str(keys_dir),
            "LEADERBOARD_INGEST_PUBLIC_URL": f"http://127.0.0.1:{ingest_port}",
        }
        specs = service_specs(
            env,
            ingest_port=ingest_port,
            broadcaster_port=broadcaster_port,
            scorer_ports=[scorer_port + i for i in range(scorers)],
            log_dir=data_dir / "logs",
        )
        for spec in specs:
            supervisor.start(spec)
        for spec in specs:
            supervisor.wait_ready(spec.name)
        _wait_for_board(f"http://127.0.0.1:{broadcaster_port}")
        click.echo(f"""
  Live leaderboard is up (embedded stack; ephemeral: it starts empty every time)
    demo page     http://127.0.0.1:{broadcaster_port}/
    broadcaster   http://127.0.0.1:{broadcaster_port}/api/v1/leaderboard   ws://127.0.0.1:{broadcaster_port}/ws/leaderboard
    ingest        http://127.0.0.1:{ingest_port}/docs   (OpenAPI: /openapi.json)
    scorer        http://127.0.0.1:{scorer_port}/metrics
    logs          {data_dir / "logs"}
  A player token:  .venv/bin/leaderboard token --sub $(python3 -c 'import uuid;print(uuid.uuid4())') --role player
  Ctrl-C stops everything.
""")
        sim_env_settings = CommonSettings(keys_dir=keys_dir)
        _run_dev_loop(supervisor, sim_env_settings, f"http://127.0.0.1:{ingest_port}", demo)
    except (KeyboardInterrupt, _Stop):
        click.echo("\nstopping…", err=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        supervisor.stop_all()
        embedded.stop()
        click.echo("stopped.", err=True)


def _wait_for_board(url: str, timeout: float = 60.0) -> None:
    """Ready services are not enough for the URLs to be useful: wait until the page can show a board,
    i.e. the scorer has built it (the REST read names its epoch) and a WebSocket gets its snapshot."""
    import httpx
    from websockets.sync.client import connect

    ws_url = url.replace("http://", "ws://") + "/ws/leaderboard"
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            board = httpx.get(f"{url}/api/v1/leaderboard", params={"limit": 1}, timeout=5)
            if board.status_code == 200 and board.json().get("epoch"):
                with connect(ws_url, open_timeout=5, close_timeout=2) as ws:
                    frame = json.loads(ws.recv(timeout=5))
                if frame.get("type") == "snapshot" and frame.get("epoch"):
                    return
                last = f"first frame {str(frame)[:120]}"
            else:
                last = f"GET /api/v1/leaderboard: {board.status_code} {board.text[:120]}"
        except Exception as exc:  # not up yet: try again until the deadline
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    raise click.ClickException(f"the board was not served within {timeout:.0f}s ({last})")


def _run_dev_loop(supervisor: object, settings: object, ingest_url: str, demo: bool) -> None:
    from leaderboard.cli.simulate import simulate
    from leaderboard.common.settings import CommonSettings
    from leaderboard.testkit.services import Supervisor

    assert isinstance(supervisor, Supervisor) and isinstance(settings, CommonSettings)

    async def main() -> None:
        sim = (
            asyncio.create_task(simulate(settings, ingest_url, players=16, rate=1.0, batch=3))
            if demo
            else None
        )
        try:
            while True:
                await asyncio.sleep(0.5)
                supervisor.restart_crashed()
                if sim is not None and sim.done() and sim.exception():
                    logging.getLogger("dev").warning("demo traffic stopped: %s", sim.exception())
                    sim = None
        finally:
            if sim is not None:
                sim.cancel()

    asyncio.run(main())


@cli.command("simulate")
@click.option("--ingest", "ingest_url", default="http://127.0.0.1:8080", show_default=True)
@click.option("--players", type=int, default=50, show_default=True)
@click.option("--rate", type=float, default=5.0, show_default=True, help="Service batches per second.")
@click.option("--batch", type=int, default=20, show_default=True, help="Events per service batch.")
@click.option("--duration", type=float, default=None, help="Seconds (default: until Ctrl-C).")
def simulate_cmd(ingest_url: str, players: int, rate: float, batch: int, duration: float | None) -> None:
    """Game-backend and player traffic against a running ingest."""
    from leaderboard.cli.simulate import simulate
    from leaderboard.common.settings import CommonSettings

    setup_logging("INFO", "simulate")
    stats = asyncio.run(
        simulate(CommonSettings(), ingest_url, players=players, rate=rate, duration=duration, batch=batch)
    )
    click.echo(json.dumps(stats))


@cli.command()
@click.option(
    "--from-offset",
    type=click.IntRange(min=0),
    default=None,
    help="Start at this offset of every partition (no emptying).",
)
@click.option(
    "--from-time", default=None, help="Start at this time (ISO-8601 or epoch seconds; no emptying)."
)
@click.option(
    "--into",
    default=None,
    help="Rebuild into Postgres schema NAME and Redis prefix {prefix}.NAME (live stores untouched).",
)
@click.option(
    "--compare",
    "do_compare",
    is_flag=True,
    help="With --into: print the differences from the live boards, or 'identical'.",
)
def replay(from_offset: int | None, from_time: str | None, into: str | None, do_compare: bool) -> None:
    """Rebuild Postgres and Redis from the log (actions and corrections); refused into the live
    stores while a scorer runs."""
    from leaderboard.cli.replay import run_command
    from leaderboard.scorer.settings import ScorerSettings

    setup_logging("WARNING", "replay")
    sys.exit(run_command(ScorerSettings(), from_offset, from_time, into, do_compare))


@cli.command("rebuild-cache")
def rebuild_cache() -> None:
    """Rebuild the Redis board from Postgres (a new epoch; clients get fresh snapshots)."""
    from leaderboard.cli.replay import rebuild_cache as run_rebuild
    from leaderboard.scorer.settings import ScorerSettings

    setup_logging("INFO", "rebuild-cache")
    click.echo(json.dumps({"version": asyncio.run(run_rebuild(ScorerSettings()))}))


@cli.command()
@click.option("--url", default="http://127.0.0.1:8090", show_default=True, help="Broadcaster base URL.")
@click.option("--limit", type=int, default=10, show_default=True)
@click.option("--board", default="global", show_default=True, help="Any board of GET /api/v1/boards.")
@click.option(
    "--period",
    default=None,
    help="A past period of a windowed board: 2026-11-23, 2026-W47, 2026-11, a season.",
)
@click.option(
    "--at", "at", default=None, help="The board as it was at TIME (ISO-8601 or epoch seconds), from Postgres."
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True
)
def board(url: str, limit: int, board: str, period: str | None, at: str | None, fmt: str) -> None:
    """Print a board (its current period, or --period) as a table; tied scores share a rank (=)."""
    import httpx

    if at is not None and period is not None:
        raise click.UsageError("--at and --period are exclusive")
    if at is not None:
        from leaderboard.cli.history import run_command as board_at

        click.echo(board_at(board, at, limit, fmt))
        return

    params: dict[str, str | int] = {"limit": limit, "board": board}
    if period is not None:
        params["period"] = period
    r = httpx.get(f"{url}/api/v1/leaderboard", params=params, timeout=10)
    if r.status_code != 200:
        click.echo(r.text, err=True)
        sys.exit(1)
    data = r.json()
    head = f"board {board}  epoch {data['epoch']}  version {data['version']}  players {data['total']}"
    if data.get("period") is not None:
        head += f"  period {data['period']}  resets {data.get('resetsAt') or 'never'}"
    click.echo(head)
    for e in data["leaderboard"]:
        shared = e.get("sharedRank", e["rank"])
        tie = f"={shared}" if shared != e["rank"] else ""
        click.echo(f"{e['rank']:>4} {tie:<5} {e['username'][:24]:<24} {e['score']:>12}  {e['userId']}")


@cli.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the files into DIR (e.g. schemas/); without it, print them as one JSON object.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Compare DIR (--out, default ./schemas) with what the models generate; exit 1 when it differs.",
)
def schemas(out_dir: Path | None, check: bool) -> None:
    """The JSON Schemas (draft 2020-12) of every event on the log, generated from the event models."""
    from leaderboard.cli import schemas as published

    if check:
        directory = out_dir or Path("schemas")
        if not directory.is_dir():
            raise click.ClickException(f"{directory} is not a directory (give the schemas folder with --out)")
        problems = published.check(directory)
        for problem in problems:
            click.echo(f"stale: {directory / problem}", err=True)
        if problems:
            click.echo(f"run `leaderboard schemas --out {directory}` to regenerate", err=True)
            sys.exit(1)
        click.echo(f"{directory}: up to date")
    elif out_dir is not None:
        changed = published.write(out_dir)
        click.echo(f"{out_dir}: {len(changed)} file(s) written" + "".join(f"\n  {c}" for c in changed))
    else:
        files = {rel: json.loads(text) for rel, text in published.generate().items() if rel.endswith(".json")}
        click.echo(json.dumps(files, indent=2, ensure_ascii=False))


@cli.command()
@click.option(
    "--since", required=True, help="From this time (included): ISO-8601 or epoch seconds; UTC if no offset."
)
@click.option(
    "--until", required=True, help="To this time (excluded): ISO-8601 or epoch seconds; UTC if no offset."
)
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
@click.option("--board", default=None, help="Only the events that feed this board of the board catalog.")
@click.option(
    "--out",
    "out_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Output file (written whole or not at all); stdout when omitted (csv only).",
)
def export(since: str, until: str, fmt: str, board: str | None, out_file: Path | None) -> None:
    """Accepted events of [--since, --until) from the actions log, for analysts (columns: see
    leaderboard.cli.export)."""
    from typing import Any

    from aiokafka.errors import KafkaError

    from leaderboard.cli import export as exporting
    from leaderboard.common.boards import BoardCatalog
    from leaderboard.common.settings import CommonSettings

    setup_logging("WARNING", "export")
    try:
        selection = exporting.Selection(
            exporting.parse_time(since, "--since"), exporting.parse_time(until, "--until")
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings = CommonSettings()
    if board is not None:
        catalog = BoardCatalog.load(settings.boards_file)
        selection.board = catalog.get(board)
        if selection.board is None:
            known = ", ".join(b.id for b in catalog)
            raise click.BadParameter(
                f"no board {board!r} in the board catalog (boards: {known})", param_hint="--board"
            )
    if fmt == "parquet" and out_file is None:
        raise click.UsageError("--format parquet needs --out FILE (Parquet is not streamed to stdout)")
    partial = out_file.with_name(out_file.name + ".partial") if out_file is not None else None
    bar: Any = None

    def start(total: int) -> None:
        nonlocal bar
        bar = click.progressbar(length=max(total, 1), label="export", file=sys.stderr, show_pos=True)
        bar.__enter__()

    stream = None
    try:
        sink: exporting.Sink
        if fmt == "parquet":
            assert partial is not None
            sink = exporting.ParquetSink(str(partial), selection.board)
        else:
            stream = partial.open("w", newline="", encoding="utf-8") if partial is not None else sys.stdout
            sink = exporting.CsvSink(stream, selection.board)
        totals = asyncio.run(
            exporting.export(
                settings, selection, sink, on_start=start, on_progress=lambda n: bar and bar.update(n)
            )
        )
        if stream is not None and stream is not sys.stdout:
            stream.close()
        if partial is not None and out_file is not None:
            partial.replace(out_file)
    except (ValueError, OSError, KafkaError) as exc:
        raise click.ClickException(f"export failed: {exc}") from None
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
        if stream is not None and stream is not sys.stdout and not stream.closed:
            stream.close()
        if partial is not None and partial.exists():
            partial.unlink()
    click.echo(json.dumps({**totals.as_dict(), "out": str(out_file) if out_file else "-"}), err=True)
