"""Offline checks of the deployment files: they parse, and they wire what the services need."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def docs(path: Path) -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_k8s_manifests_parse_and_cover_the_three_services() -> None:
    k8s = ROOT / "deploy" / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    objects = [d for name in kustomization["resources"] for d in docs(k8s / name)]
    deployments = {d["metadata"]["name"]: d for d in objects if d["kind"] == "Deployment"}  # type: ignore[index]
    assert set(deployments) == {"ingest", "scorer", "broadcaster"}
    for name, dep in deployments.items():
        container = dep["spec"]["template"]["spec"]["containers"][0]  # type: ignore[index]
        assert container["args"] == [name]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
        assert refs == {"leaderboard-config", "leaderboard-secrets"}
    config = next(d for d in objects if d["kind"] == "ConfigMap")
    assert config["data"]["LEADERBOARD_KAFKA_IDEMPOTENCE"] == "true"  # type: ignore[index]
    assert {d["kind"] for d in objects} >= {
        "Service",
        "Ingress",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }


def test_compose_runs_every_service_on_real_backends() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "redis", "postgres", "ingest", "scorer", "broadcaster"} <= set(services)
    assert services["ingest"]["command"] == ["ingest"]
    assert services["scorer"]["environment"]["LEADERBOARD_KAFKA_BOOTSTRAP"] == "kafka:9092"
