"""deploy/k8s: both overlays build with kustomize, validate strictly against the Kubernetes schemas, pass
checkov, and wire what the services need (probes, settings, TLS, topics, routes, network policies).

kubernetes-validate ships the Kubernetes schemas but not the CRDs: the Strimzi resources of the prod overlay
are checked here field by field against what the services need (the ConfigMap's partitions, replication,
bootstrap and TLS secret names) rather than against Strimzi's CRD schema.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # no stubs or py.typed
import pytest
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError  # type: ignore[import-untyped]

from leaderboard.broadcaster.settings import BroadcasterSettings
from leaderboard.common.kafka import topic_specs
from leaderboard.common.settings import CommonSettings
from leaderboard.ingest.settings import IngestSettings
from leaderboard.scorer.settings import ScorerSettings

from .conftest import CHECKOV, K8S, OVERLAYS, by_kind, run

SERVICES = {"ingest", "scorer", "broadcaster"}
# The oldest Kubernetes the manifests support (the preStop sleep action is on by default from 1.30) and
# the newest the installed schemas know.
K8S_VERSIONS = ("1.31.0", kubernetes_validate.utils.latest_version())
STRIMZI = "kafka.strimzi.io/v1beta2"
WRITE_PATHS = {
    "/api/v1/actions",
    "/api/v1/score",
    "/api/v1/events",
    "/score",
    "/api/v1/catalog",
    "/api/v1/dev",
}
READ_PATHS = {"/api/v1/leaderboard", "/api/v1/boards", "/scores", "/ws", "/"}

Objects = list[dict[str, Any]]


def config_of(objects: Objects) -> dict[str, str]:
    data: dict[str, str] = by_kind(objects, "ConfigMap")["leaderboard-config"]["data"]
    return data


def settings_env(data: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    # Out of band in the cluster (leaderboard-secrets); any value does for parsing the settings.
    monkeypatch.setenv("LEADERBOARD_POSTGRES_DSN", "postgresql://u@db:5432/leaderboard?sslmode=verify-full")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_strictly_against_the_kubernetes_schemas(
    overlay: str, built: dict[str, tuple[str, Objects]]
) -> None:
    _, objects = built[overlay]
    unknown = set()
    for version in K8S_VERSIONS:
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except SchemaNotFoundError:
                unknown.add((obj["apiVersion"], obj["kind"]))
            except ValidationError as exc:
                pytest.fail(
                    f"{overlay}: {obj['kind']}/{obj['metadata']['name']} (k8s {version}): {exc.message}"
                )
    # Only the Strimzi custom resources lack a schema here; they are checked in test_prod_kafka_resources.
    expected = {(STRIMZI, k) for k in ("Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser")}
    assert unknown == (expected if overlay == "prod" else set())


def test_strict_validation_refuses_an_unknown_field(built: dict[str, tuple[str, Objects]]) -> None:
    deployment = copy.deepcopy(by_kind(built["prod"][1], "Deployment")["ingest"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {
        "httpGet": {"path": "/readyz"}
    }
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_run_the_three_services_hardened(
    overlay: str, built: dict[str, tuple[str, Objects]]
) -> None:
    _, objects = built[overlay]
    deployments = by_kind(objects, "Deployment")
    assert set(deployments) == SERVICES
    config = config_of(objects)
    assert config["LEADERBOARD_KAFKA_IDEMPOTENCE"] == "true"
    assert {o["kind"] for o in objects} >= {
        "Service",
        "Ingress",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    }
    assert not by_kind(objects, "Secret"), "no secret values are committed: Secrets are made out of band"
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == [name]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
        assert refs == {"leaderboard-config", "leaderboard-secrets"}
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the image's user (Dockerfile)
        assert pod["automountServiceAccountToken"] is False
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc["seccompProfile"]["type"] == "RuntimeDefault"
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        # Kafka client certificates where the settings say they are.
        for key in ("CAFILE", "CERTFILE", "KEYFILE"):
            path = Path(config.get(f"LEADERBOARD_KAFKA_SSL_{key}", "/etc/leaderboard/kafka/x"))
            assert str(path.parent) in mounts, f"{name}: {path} is not on a mounted volume"
    scorer = deployments["scorer"]["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in scorer["containers"][0]["volumeMounts"]}
    datadir = config["LEADERBOARD_SCORER_DATADIR"]
    assert "emptyDir" in {v["name"]: v for v in scorer["volumes"]}[mounts[datadir]]
    assert set(by_kind(objects, "PodDisruptionBudget")) == SERVICES
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas.values()} == {"ingest", "broadcaster"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_config_parses_with_the_services_settings(
    overlay: str, built: dict[str, tuple[str, Objects]], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_of(built[overlay][1])
    settings_env(config, monkeypatch)
    ingest, broadcaster, scorer = IngestSettings(), BroadcasterSettings(), ScorerSettings()
    assert ingest.host == broadcaster.host == scorer.scorer_web_host == "0.0.0.0"
    for cidr in ingest.trusted_proxies:
        ipaddress.ip_network(cidr)
    assert broadcaster.ws_allowed_origins and all(
        o.startswith("https://") for o in broadcaster.ws_allowed_origins
    )
    if overlay == "prod":
        assert not ingest.dev_mode and not broadcaster.dev_mode
        assert ingest.jwt_jwks_url and ingest.jwt_jwks_url.startswith("https://")
        assert ingest.kafka_security_protocol == "SSL" and ingest.topic_replication == 3
    else:
        assert ingest.dev_mode and not ingest.jwt_jwks_url
        assert ingest.keys_dir == Path("/keys")


def test_scorer_replicas_stay_within_the_partition_count(built: dict[str, tuple[str, Objects]]) -> None:
    for overlay in OVERLAYS:
        objects = built[overlay][1]
        partitions = int(config_of(objects)["LEADERBOARD_ACTIONS_PARTITIONS"])
        assert 1 <= by_kind(objects, "Deployment")["scorer"]["spec"]["replicas"] <= partitions
        assert "scorer" not in {
            h["spec"]["scaleTargetRef"]["name"] for h in by_kind(objects, "HorizontalPodAutoscaler").values()
        }
    assert int(config_of(built["prod"][1])["LEADERBOARD_ACTIONS_PARTITIONS"]) == 8


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_routes_writes_to_ingest_and_reads_to_the_broadcaster(
    overlay: str, built: dict[str, tuple[str, Objects]]
) -> None:
    ingresses = by_kind(built[overlay][1], "Ingress")
    routes: dict[str, str] = {}
    hosts = set()
    for ing in ingresses.values():
        assert ing["spec"]["ingressClassName"] == "nginx"
        (tls,) = ing["spec"]["tls"]
        assert tls["secretName"] == "leaderboard-tls"
        for rule in ing["spec"]["rules"]:
            hosts.add(rule["host"])
            assert rule["host"] in tls["hosts"]
            for p in rule["http"]["paths"]:
                routes[p["path"]] = p["backend"]["service"]["name"]
    assert len(hosts) == 1
    assert {p for p, s in routes.items() if s == "ingest"} == WRITE_PATHS
    assert {p for p, s in routes.items() if s == "broadcaster"} == READ_PATHS
    read = ingresses["leaderboard-read"]["metadata"]["annotations"]
    assert int(read["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(read["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert read["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert read["cert-manager.io/cluster-issuer"]
    # The catch-all "/" is Exact: /metrics, /healthz and /openapi.json are not public.
    (root,) = [
        p
        for i in ingresses.values()
        for r in i["spec"]["rules"]
        for p in r["http"]["paths"]
        if p["path"] == "/"
    ]
    assert root["pathType"] == "Exact"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_admit_what_each_needs(
    overlay: str, built: dict[str, tuple[str, Objects]]
) -> None:
    policies = by_kind(built[overlay][1], "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert (
        set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny and "egress" not in deny
    )
    (expr,) = deny["podSelector"]["matchExpressions"]
    assert expr["operator"] == "In" and set(expr["values"]) == SERVICES

    def admits(app: str) -> dict[str, set[int]]:
        spec = policies[app]["spec"]
        out: dict[str, set[int]] = {}
        for rule in spec.get("ingress", []):
            for peer in rule["from"]:
                ns = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                out.setdefault(ns, set()).update(p["port"] for p in rule["ports"])
        return out

    assert admits("ingest")["ingress-nginx"] == {8080}
    assert admits("broadcaster")["ingress-nginx"] == {8090}
    assert "ingress-nginx" not in admits("scorer")
    egress_ports = {
        app: {p["port"] for rule in policies[app]["spec"]["egress"] for p in rule["ports"]}
        for app in SERVICES
    }
    assert 5432 in egress_ports["scorer"] and 5432 not in egress_ports["ingest"] | egress_ports["broadcaster"]
    assert all({9093, 6380} <= ports for ports in egress_ports.values())


def test_prod_kafka_resources(built: dict[str, tuple[str, Objects]], monkeypatch: pytest.MonkeyPatch) -> None:
    objects = built["prod"][1]
    config = config_of(objects)
    (kafka,) = by_kind(objects, "Kafka").values()
    assert kafka["apiVersion"] == STRIMZI
    cluster = kafka["metadata"]["name"]
    spec = kafka["spec"]["kafka"]
    (listener,) = [lst for lst in spec["listeners"] if lst["tls"]]
    assert listener["authentication"]["type"] == "tls"
    assert config["LEADERBOARD_KAFKA_BOOTSTRAP"] == f"{cluster}-kafka-bootstrap:{listener['port']}"
    assert config["LEADERBOARD_KAFKA_SECURITY_PROTOCOL"] == "SSL"
    assert spec["config"]["min.insync.replicas"] == 2 and spec["config"]["default.replication.factor"] == 3
    assert spec["config"]["auto.create.topics.enable"] is False
    pools = by_kind(objects, "KafkaNodePool")
    assert sum(p["spec"]["replicas"] for p in pools.values() if "broker" in p["spec"]["roles"]) == 3
    for obj in objects:
        if obj["apiVersion"] == STRIMZI and obj["kind"] != "Kafka":
            assert obj["metadata"]["labels"]["strimzi.io/cluster"] == cluster, obj["metadata"]["name"]
            assert obj["metadata"]["namespace"] == kafka["metadata"]["namespace"]
    # Every topic the services use, with the partitions and replication their settings expect.
    settings_env(config, monkeypatch)
    specs = topic_specs(CommonSettings())
    topics = {t["spec"]["topicName"]: t["spec"] for t in by_kind(objects, "KafkaTopic").values()}
    assert {name: t["partitions"] for name, t in topics.items()} == specs
    assert {t["replicas"] for t in topics.values()} == {int(config["LEADERBOARD_TOPIC_REPLICATION"])}
    assert all(t["config"]["min.insync.replicas"] == 2 for t in topics.values())
    actions = topics[min(specs, key=lambda n: "actions" not in n)]
    assert actions["config"]["retention.ms"] == -1, "the log is the source of truth: kept forever"
    # The client certificate and the CA the pods mount are the ones Strimzi writes.
    (user,) = by_kind(objects, "KafkaUser").values()
    assert user["spec"]["authentication"]["type"] == "tls"
    for dep in by_kind(objects, "Deployment").values():
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        sources = {s["secret"]["name"] for s in volumes["kafka-tls"]["projected"]["sources"]}
        assert sources == {f"{cluster}-cluster-ca-cert", user["metadata"]["name"]}


def test_dev_overlay_uses_an_external_plaintext_kafka_and_the_dev_keys(
    built: dict[str, tuple[str, Objects]],
) -> None:
    objects = built["dev"][1]
    config = config_of(objects)
    assert config["LEADERBOARD_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    assert config["LEADERBOARD_KAFKA_BOOTSTRAP"].endswith(":9092")
    assert not [o for o in objects if o["apiVersion"] == STRIMZI]
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {
        "leaderboard-dev"
    }
    for name in ("ingest", "broadcaster"):
        pod = by_kind(objects, "Deployment")[name]["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert (
            volumes[mounts[config["LEADERBOARD_KEYS_DIR"]]]["secret"]["secretName"] == "leaderboard-dev-keys"
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_passes_on_the_rendered_manifests(
    overlay: str, built: dict[str, tuple[str, Objects]], tmp_path: Path
) -> None:
    assert CHECKOV.exists(), f"checkov is not installed at {CHECKOV}: run `make install`"
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(built[overlay][0])
    result = run(
        CHECKOV,
        "-f",
        rendered,
        "--framework",
        "kubernetes",
        "--skip-download",
        "--compact",
        "-o",
        "json",
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BC_SKIP_MAPPING": "TRUE"},
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert summary["failed"] == 0 and result.returncode == 0, failed
    assert summary["passed"] > 100
    skipped = {c["check_id"] for c in report["results"]["skipped_checks"]}
    assert skipped <= {"CKV_K8S_43", "CKV_K8S_35"}


def test_every_checkov_suppression_is_justified_inline() -> None:
    for path in sorted(K8S.rglob("*.yaml")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if "checkov.io/skip" in line:
                check = line.split(":", 1)[1].strip().split("=", 1)[0]
                justified, reason = line.split("=", 1)[0], line.split("=", 1)[1].strip()
                assert reason, f"{path}:{i + 1}: a suppression needs a reason"
                comments = [
                    c for c in lines[max(0, i - 3) : i] if c.strip().startswith("# checkov:skip=" + check)
                ]
                assert comments, (
                    f"{path}:{i + 1}: {justified} has no `# checkov:skip={check}: why` comment above it"
                )
