"""docker-compose.yml validates against the Compose specification's JSON schema (vendored in
tests/deploy/schemas: there is no Docker engine or compose plugin in CI) and wires the system: real Kafka (KRaft) with its topics
created up front, Redis, Postgres, the dev keys once, 2 scorers, and 2 ingest and 2 broadcaster replicas
behind one load balancer port each."""

from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from leaderboard.common.kafka import topic_specs
from leaderboard.common.settings import CommonSettings

from .conftest import ROOT

COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
HAPROXY = ROOT / "deploy" / "compose" / "haproxy.cfg"
APPS = ("ingest", "scorer", "broadcaster")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def validate(path: Path) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    document = yaml.safe_load(path.read_text())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_validates_against_the_compose_spec() -> None:
    assert validate(COMPOSE) == []


def test_the_compose_schema_refuses_a_mistake(tmp_path: Path, compose: dict[str, Any]) -> None:
    broken = dict(
        compose, services={**compose["services"], "redis": {**compose["services"]["redis"], "helthcheck": {}}}
    )
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    errors = validate(path)
    assert len(errors) == 1 and "helthcheck" in errors[0]


def test_compose_runs_every_service_on_real_backends(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "redis", "postgres", "ingest", "scorer", "broadcaster"} <= set(services)
    assert services["ingest"]["command"] == ["ingest"]
    assert services["scorer"]["environment"]["LEADERBOARD_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    for app in APPS:
        svc = services[app]
        assert svc["command"] == [app]
        assert svc["build"]["target"] == "service"
        assert svc["deploy"]["replicas"] == 2
        assert "ports" not in svc, "replicas are reached through the load balancer"
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
        conditions = {name: dep["condition"] for name, dep in svc["depends_on"].items()}
        assert conditions == {
            "kafka-init": "service_completed_successfully",
            "keys": "service_completed_successfully",
            "redis": "service_healthy",
            "postgres": "service_healthy",
        }
    for name in ("kafka", "redis", "postgres"):
        assert services[name]["healthcheck"]["test"], name
    # The dev key pair: made once into a volume that every service mounts.
    assert services["keys"]["command"] == ["keys"]
    assert "keys:/keys" in services["keys"]["volumes"]
    assert all("keys:/keys" in services[app]["volumes"] for app in APPS)
    # The scorer's data dir is writable on a read-only root.
    datadir = "/var/lib/leaderboard/scorer"
    assert any(t.startswith(datadir + ":") for t in services["scorer"]["tmpfs"])


def test_topics_are_created_with_explicit_partitions_and_the_log_kept_forever(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    init = services["kafka-init"]
    assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
    script = init["command"][0].replace("\\\n", " ")
    created: dict[str, dict[str, Any]] = {}
    for line in script.splitlines():
        words = shlex.split(line)
        if "--create" not in words:
            continue
        assert "--if-not-exists" in words
        opts = dict(itertools.pairwise(words))
        configs = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "--config")
        created[opts["--topic"]] = {
            "partitions": int(opts["--partitions"]),
            "replication": int(opts["--replication-factor"]),
            "config": configs,
        }
    env = services["scorer"]["environment"]
    settings = CommonSettings(
        actions_partitions=int(env["LEADERBOARD_ACTIONS_PARTITIONS"]),
        topic_replication=int(env["LEADERBOARD_TOPIC_REPLICATION"]),
    )
    specs = topic_specs(settings)
    assert {name: t["partitions"] for name, t in created.items()} == specs
    assert {t["replication"] for t in created.values()} == {settings.topic_replication}
    actions = next(name for name in specs if "actions" in name)
    assert created[actions]["config"]["retention.ms"] == "-1"
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_one_port_per_service_through_the_load_balancer(compose: dict[str, Any]) -> None:
    lb = compose["services"]["lb"]
    assert set(lb["ports"]) == {"8080:8080", "8090:8090"}
    assert "./deploy/compose/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in lb["volumes"]
    cfg = HAPROXY.read_text()
    backends = dict(re.findall(r"^backend (\w+)\n((?:    .*\n|\n)*)", cfg, re.M))
    assert re.search(r"server-template \w+ \d+ ingest:8080", backends["ingest"])
    assert re.search(r"server-template \w+ \d+ broadcaster:8090", backends["broadcaster"])
    assert "option httpchk GET /readyz" in backends["broadcaster"]
    # WebSocket and SSE connections outlive ordinary request timeouts.
    assert re.search(r"^\s+timeout tunnel 1h$", cfg, re.M)
    assert re.search(r"^\s+option forwardfor$", cfg, re.M)
    # The services believe X-Forwarded-For from the compose network only, where the balancer lives.
    subnet = compose["networks"]["default"]["ipam"]["config"][0]["subnet"]
    assert compose["services"]["ingest"]["environment"]["LEADERBOARD_TRUSTED_PROXIES"] == f'["{subnet}"]'


def test_the_one_command_is_at_the_top() -> None:
    head = COMPOSE.read_text().splitlines()[:3]
    assert any(line.strip() == "#   docker compose up --build" for line in head)
