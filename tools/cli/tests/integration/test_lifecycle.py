"""The CLI's process lifecycles, as a developer runs them: `leaderboard stack` and `leaderboard dev`
start real servers and leave nothing behind when stopped, even when the supervisor is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from leaderboard.testkit.processes import PidFile, free_port, spawn
from leaderboard.testkit.testing import admin_sql, wait_until, with_database

CLI = [sys.executable, "-m", "leaderboard.cli"]


def descendants(pid: int) -> list[psutil.Process]:
    children: list[psutil.Process] = psutil.Process(pid).children(recursive=True)
    return children


def all_gone(procs: list[psutil.Process], timeout: float = 20) -> bool:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADERBOARD_")}
    env["LEADERBOARD_KEYS_DIR"] = str(tmp / "keys")
    return env


def start_stack(tmp: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], dict[str, str]]:
    ports = [str(free_port()) for _ in range(3)]
    proc = subprocess.Popen(
        [
            *CLI,
            "stack",
            "--data-dir",
            str(tmp / "stack"),
            "--kafka-port",
            ports[0],
            "--redis-port",
            ports[1],
            "--postgres-port",
            ports[2],
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    exports: dict[str, str] = {}
    assert proc.stdout is not None
    while len(exports) < 4:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"stack exited with {proc.wait()}")
        key, _, value = line.removeprefix("export ").strip().partition("=")
        exports[key] = value
    return proc, exports


def test_stack_prints_exports_and_sigterm_stops_every_server(tmp_path: Path) -> None:
    proc, exports = start_stack(tmp_path, clean_env(tmp_path))
    assert set(exports) == {
        "LEADERBOARD_KAFKA_BOOTSTRAP",
        "LEADERBOARD_KAFKA_IDEMPOTENCE",
        "LEADERBOARD_REDIS_URL",
        "LEADERBOARD_POSTGRES_DSN",
    }
    assert all("127.0.0.1" in v for k, v in exports.items() if k != "LEADERBOARD_KAFKA_IDEMPOTENCE")
    children = descendants(proc.pid)
    assert len(children) >= 3
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert all_gone(children)


def test_killed_supervisor_takes_its_servers_with_it_and_next_start_is_clean(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    proc, _ = start_stack(tmp_path, env)
    children = descendants(proc.pid)
    proc.kill()  # SIGKILL: no cleanup code runs; the kernel's parent-death signal must do it
    proc.communicate(timeout=10)
    assert all_gone(children)
    again, exports = start_stack(tmp_path, env)  # same data dir: stale files must not get in the way
    try:
        assert exports["LEADERBOARD_REDIS_URL"].startswith("redis://127.0.0.1:")
    finally:
        again.send_signal(signal.SIGTERM)
        again.communicate(timeout=30)


def test_pidfile_clears_a_stale_process(tmp_path: Path) -> None:
    stale = spawn(["sleep", "300"])
    try:
        pidfile = PidFile(tmp_path / "pids.json")
        pidfile.record("redis", stale.pid)
        assert pidfile.clear_stale() == ["redis"]
        assert stale.wait(10) is not None
    finally:
        stale.kill()


def test_token_command_prints_the_bare_jwt_last(tmp_path: Path) -> None:
    sub = str(uuid.uuid4())
    out = subprocess.run(
        [*CLI, "token", "--sub", sub, "--role", "service", "--name", "Backend", "--ttl", "60"],
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    token = out.strip().splitlines()[-1]
    assert token.count(".") == 2
    bad = subprocess.run(
        [*CLI, "token", "--sub", "nope"], env=clean_env(tmp_path), capture_output=True, text=True
    )
    assert bad.returncode != 0 and "UUID" in bad.stderr


@pytest.mark.slow
def test_dev_brings_everything_up_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    ingest, broadcaster, scorer = free_port(), free_port(), free_port()
    # The embedded stack ports are fixed defaults for `make run`; in the test, use configured Redis/Postgres
    # from the environment when CI sets them, otherwise the defaults must be free.
    for key in ("LEADERBOARD_REDIS_URL", "LEADERBOARD_POSTGRES_DSN"):
        if os.environ.get(key):
            env[key] = os.environ[key]
    args = [
        "dev",
        "--data-dir",
        str(tmp_path / "dev"),
        "--ingest-port",
        str(ingest),
        "--broadcaster-port",
        str(broadcaster),
        "--scorer-port",
        str(scorer),
        "--kafka-port",
        str(free_port()),
        "--redis-port",
        str(free_port()),
        "--postgres-port",
        str(free_port()),
    ]
    database = None
    if os.environ.get("LEADERBOARD_POSTGRES_DSN"):
        # Shared system Postgres: this run gets its own database, Redis prefix, topics and group.
        database = f"dev{uuid.uuid4().hex[:8]}"
        admin_dsn = os.environ["LEADERBOARD_POSTGRES_DSN"]
        asyncio.run(admin_sql(admin_dsn, f'CREATE DATABASE "{database}"'))
        env["LEADERBOARD_POSTGRES_DSN"] = with_database(admin_dsn, database)
        env["LEADERBOARD_REDIS_PREFIX"] = database
        env["LEADERBOARD_TOPIC_PREFIX"] = database + "."
        env["LEADERBOARD_SCORER_GROUP"] = database
    log = tmp_path / "dev.out"
    with log.open("w") as sink:
        proc = subprocess.Popen([*CLI, *args], env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
    try:
        # The banner with the URLs comes once every service is ready.
        wait_until(
            lambda: f"http://127.0.0.1:{broadcaster}/" in log.read_text(),
            timeout=120,
            message="dev to print its URLs",
        )
        assert _ok(f"http://127.0.0.1:{broadcaster}/readyz") and _ok(f"http://127.0.0.1:{ingest}/readyz")
        page = httpx.get(f"http://127.0.0.1:{broadcaster}/", timeout=5)
        assert page.status_code == 200 and "Live Leaderboard" in page.text
        # Demo traffic is on by default: the board fills without anyone doing anything.
        wait_until(lambda: _board_size(broadcaster) > 0, timeout=60, message="demo traffic on the board")
        children = descendants(proc.pid)
        configured = sum(1 for key in ("LEADERBOARD_REDIS_URL", "LEADERBOARD_POSTGRES_DSN") if key in env)
        # Tansu, the embedded Redis and Postgres not replaced by configuration, and the three services.
        assert len(children) >= 6 - configured, children
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()[-2000:]
        assert all_gone(children)
        assert "stopped." in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        if database:
            asyncio.run(
                admin_sql(
                    os.environ["LEADERBOARD_POSTGRES_DSN"],
                    f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)',
                )
            )


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _board_size(port: int) -> int:
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/api/v1/leaderboard", timeout=2)
        return len(r.json()["leaderboard"]) if r.status_code == 200 else 0
    except httpx.HTTPError:
        return 0
