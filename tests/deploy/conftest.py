"""Offline checks of the deployment files: the tools come from the lock (`make install`), never from the
network at test time. A missing tool fails the test (it is an install bug), it never skips."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
# checkov has its own tool venv (deploy/ci/requirements-checkov.lock), installed by `make install`.
CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"


def tool(name: str) -> Path:
    """A console script of the test venv (kubectl, hadolint, check-jsonschema...)."""
    path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} is not installed in {path.parent}: run `make install`"
    return path


def run(*args: str | Path, timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
        **kwargs,
    )


def kustomize(path: Path) -> str:
    result = run(tool("kubectl"), "kustomize", path)
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return result.stdout


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.fixture(scope="session")
def built() -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """overlay -> (the rendered YAML, its objects), built once per session."""
    out = {}
    for overlay in OVERLAYS:
        text = kustomize(K8S / "overlays" / overlay)
        out[overlay] = (text, [d for d in yaml.safe_load_all(text) if d])
    return out
