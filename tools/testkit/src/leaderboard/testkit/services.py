"""Running the three services as ``leaderboard <service>`` child processes, as users run them.

Used by ``leaderboard dev`` and by the integration and end-to-end tests, so both exercise the same
start-up path: real processes on TCP ports, configured only through ``LEADERBOARD_*`` variables.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from leaderboard.testkit.processes import spawn, stop

log = logging.getLogger(__name__)


@dataclass
class ServiceSpec:
    name: str
    args: list[str]
    env: dict[str, str]
    health_url: str
    log_path: Path | None = None


def leaderboard_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "leaderboard.cli", *args]


def service_specs(
    env: Mapping[str, str],
    *,
    ingest_port: int,
    broadcaster_port: int,
    scorer_ports: list[int],
    log_dir: Path | None,
) -> list[ServiceSpec]:
    def log_for(name: str) -> Path | None:
        return log_dir / f"{name}.log" if log_dir else None

    specs = [
        ServiceSpec(
            "ingest",
            leaderboard_cmd("ingest", "--port", str(ingest_port)),
            dict(env),
            f"http://127.0.0.1:{ingest_port}/readyz",
            log_for("ingest"),
        ),
        ServiceSpec(
            "broadcaster",
            leaderboard_cmd("broadcaster", "--port", str(broadcaster_port)),
            dict(env),
            f"http://127.0.0.1:{broadcaster_port}/readyz",
            log_for("broadcaster"),
        ),
    ]
    for i, port in enumerate(scorer_ports):
        name = "scorer" if i == 0 else f"scorer-{i + 1}"
        scorer_env = {
            **env,
            "LEADERBOARD_SCORER_DATADIR": str((log_dir or Path(".leaderboard")) / f"{name}-data"),
        }
        specs.append(
            ServiceSpec(
                name,
                leaderboard_cmd("scorer", "--web-port", str(port)),
                scorer_env,
                f"http://127.0.0.1:{port}/readyz",
                log_for(name),
            )
        )
    return specs


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own loopback URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass
class Running:
    spec: ServiceSpec
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)
    restarts: int = 0


class Supervisor:
    """Starts services, waits for them to be ready, restarts crashed ones, stops them all."""

    def __init__(self) -> None:
        self.running: dict[str, Running] = {}

    def start(self, spec: ServiceSpec) -> Running:
        if spec.log_path:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        proc = spawn(spec.args, env=spec.env, log_path=spec.log_path)
        run = Running(
            spec, proc, restarts=self.running[spec.name].restarts + 1 if spec.name in self.running else 0
        )
        self.running[spec.name] = run
        return run

    def wait_ready(self, name: str, timeout: float = 90.0) -> None:
        run = self.running[name]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if run.proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with status {run.proc.returncode} during start-up{self._tail(run)}"
                )
            if http_ok(run.spec.health_url):
                return
            time.sleep(0.2)
        raise TimeoutError(
            f"{name} was not ready within {timeout:.0f}s ({run.spec.health_url}){self._tail(run)}"
        )

    def _tail(self, run: Running) -> str:
        if run.spec.log_path and run.spec.log_path.exists():
            lines = run.spec.log_path.read_text(errors="replace").splitlines()[-25:]
            return "\n--- last log lines ---\n" + "\n".join(lines)
        return ""

    def crashed(self) -> list[Running]:
        return [r for r in self.running.values() if r.proc.poll() is not None]

    def restart_crashed(self, max_restarts: int = 20) -> list[str]:
        restarted = []
        for run in self.crashed():
            if run.restarts >= max_restarts:
                continue
            if time.monotonic() - run.started < min(30.0, 0.5 * 2**run.restarts):
                continue  # back off
            log.warning("%s exited with status %s; restarting", run.spec.name, run.proc.returncode)
            self.start(run.spec)
            restarted.append(run.spec.name)
        return restarted

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        run = self.running[name]
        if run.proc.poll() is None:
            run.proc.send_signal(sig)
            run.proc.wait(30)

    def stop(self, name: str, timeout: float = 15.0) -> None:
        stop(self.running[name].proc, sig=signal.SIGTERM, timeout=timeout)

    def stop_all(self, timeout: float = 15.0) -> None:
        for run in self.running.values():
            if run.proc.poll() is None:
                run.proc.send_signal(signal.SIGTERM)
        for run in self.running.values():
            stop(run.proc, timeout=timeout)
