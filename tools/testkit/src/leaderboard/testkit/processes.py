"""Child processes that cannot outlive their parent.

Every process the CLI starts (embedded servers, services) gets ``PR_SET_PDEATHSIG`` so the kernel
signals it if the supervisor dies, even by SIGKILL, and runs in its own session so that a terminal's
Ctrl-C reaches only the supervisor, which then stops children in order. The pids are also recorded
in a file so that a later start can clear anything a crash left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Callable[[], None]:
    def preexec() -> None:
        # Runs in the child after the uid switch (subprocess applies `user=` first), so the setting sticks.
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() == 1:  # the parent already died between fork and prctl
            os.kill(os.getpid(), sig)

    return preexec


def as_user(user: str | None) -> dict[str, Any]:
    """subprocess options to run as ``user`` with *its* group and no inherited supplementary groups
    (keeping root's gid would make group-permission checks deny what the user may traverse)."""
    if user is None:
        return {}
    import pwd

    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def spawn(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    user: str | None = None,
    cwd: Path | None = None,
    death_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            list(args),
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            **as_user(user),
            start_new_session=True,
            preexec_fn=_die_with_parent(death_signal),
        )
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]


def stop(
    proc: subprocess.Popen[bytes] | psutil.Process, *, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> None:
    """Signal, wait, then kill. Works for children and for adopted stale pids."""
    try:
        if isinstance(proc, subprocess.Popen):
            if proc.poll() is not None:
                return
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        else:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    except (ProcessLookupError, psutil.NoSuchProcess):
        pass


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_for_port(
    host: str, port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{what} exited with status {proc.returncode} before listening on {host}:{port}"
            )
        if port_open(host, port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not listen on {host}:{port} within {timeout:.0f}s")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PidFile:
    """name -> (pid, create_time) of what we started, to clear stale servers on the next start."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, list[float]]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def record(self, name: str, pid: int) -> None:
        data = self._read()
        with contextlib.suppress(psutil.NoSuchProcess):
            data[name] = [pid, psutil.Process(pid).create_time()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(data))

    def forget(self, name: str) -> None:
        data = self._read()
        if data.pop(name, None) is not None:
            self.path.write_text(json.dumps(data))

    def clear_stale(self) -> list[str]:
        """Stop every recorded process that is still the one we started (same pid and start time)."""
        cleared = []
        for name, (pid, created) in self._read().items():
            try:
                proc = psutil.Process(int(pid))
                if abs(proc.create_time() - created) > 0.01:
                    continue
            except psutil.NoSuchProcess:
                continue
            log.warning("stopping stale %s (pid %d) left by an earlier run", name, pid)
            stop(proc, sig=signal.SIGINT if name == "postgres" else signal.SIGTERM)
            cleared.append(name)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        return cleared
