"""Session fixtures: real services for integration and end-to-end tests (see leaderboard.testkit.testing).

``LEADERBOARD_REQUIRE_ALL=1`` (set by .ci/run) turns any skipped test into a failed run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from leaderboard.testkit.testing import Namespace, System, base_environment

ARTIFACTS = Path(__file__).parent / "test-artifacts"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with base_environment(tmp_path_factory.mktemp("leaderboard")) as env:
        yield env


@pytest.fixture(scope="session")
def namespace(base_env: dict[str, str]) -> Iterator[Namespace]:
    ns = Namespace.create(base_env)
    yield ns
    ns.drop()


@pytest.fixture(scope="session")
def system(namespace: Namespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """ingest + scorer + broadcaster, shared by the tests that only read and add."""
    sys_ = System(namespace, tmp_path_factory.mktemp("logs"))
    try:
        sys_.start()
        yield sys_
    finally:
        sys_.stop()


@pytest.fixture
def fresh_namespace(base_env: dict[str, str]) -> Iterator[Namespace]:
    ns = Namespace.create(base_env)
    yield ns
    ns.drop()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("LEADERBOARD_REQUIRE_ALL") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    skipped = reporter.stats.get("skipped", [])
    if skipped:
        reporter.write_line(
            f"LEADERBOARD_REQUIRE_ALL=1: {len(skipped)} test(s) skipped; failing the run", red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
