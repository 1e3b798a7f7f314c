"""The Kubernetes manifests in ``deploy/k8s``: valid, and what operators rely on holds.

Every core resource (Deployment, Service, Job, ...) is validated offline against the
Kubernetes OpenAPI schemas that the ``kubernetes-validate`` package ships, in strict mode
(unknown fields are errors) for one fixed Kubernetes version. The custom resources of KEDA
(``ScaledObject``) and Strimzi (``Kafka``, ``KafkaNodePool``, ``KafkaTopic``) have no schema
there (their CRDs come with the operators), so they are checked structurally below, field
by field, instead.

On top of schema validity: probes hit ``/readyz`` and ``/healthz`` on a declared port that
is the service's own port setting; every workload has requests, limits and a locked-down
security context; every Deployment has a PodDisruptionBudget and an autoscaler; scoring
never scales beyond the partitions of the events topic; the topics are the ones the
application itself would create at replication factor 3; every ``TOUCHPULSE_*`` variable
is a real setting and the whole environment of each pod validates as ``Settings``; the
embedded promise catalogue is ``deploy/promises.yaml`` byte for byte; each
``kustomization.yaml`` lists every file of its folder.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml

from touchpulse_api.app import DISPATCHER_STOP_S
from touchpulse_scoring.service import STOP_TIMEOUT_S
from touchpulse_shared.kafka.topics import topic_specs
from touchpulse_shared.settings import (
    CONFIG_FILE_ENV,
    ENV_PREFIX,
    Settings,
    env_name,
    load_settings,
)
from touchpulse_shared.stack.services import SERVICES, ServiceSpec

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CATALOGUE = ROOT / "deploy" / "promises.yaml"

#: The Kubernetes version the manifests are validated against (kubernetes-validate ships
#: its schemas for 1.28 and newer). 1.31: matchLabelKeys in topology spread and the
#: preStop `sleep` action (1.30+) are in it, and it is well inside what managed clusters run.
KUBERNETES_VERSION = "1.31.0"
NAMESPACE = "touchpulse"
SECRET_NAME = "touchpulse-secrets"  # noqa: S105 - the Secret's name, not a secret
SECRET_KEYS = {"database-url", "webhook-signing-key"}

#: API groups whose kinds are CRDs: no schema in kubernetes-validate, checked structurally.
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("kafka.strimzi.io/v1beta2", "Kafka"),
    ("kafka.strimzi.io/v1beta2", "KafkaNodePool"),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"),
}
KUSTOMIZE_API = "kustomize.config.k8s.io/v1beta1"


@dataclass(frozen=True)
class Manifest:
    path: Path
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        kind: str = self.doc["kind"]
        return kind

    @property
    def name(self) -> str:
        name: str = self.doc["metadata"]["name"]
        return name

    @property
    def custom(self) -> bool:
        return (self.doc["apiVersion"], self.kind) in CUSTOM_KINDS

    def __str__(self) -> str:
        return f"{self.path.relative_to(K8S)}:{self.kind}/{self.name}"


def _load_all() -> list[Manifest]:
    manifests = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:  # an empty document between two `---`
                manifests.append(Manifest(path, doc))
    return manifests


MANIFESTS = _load_all()
CORE = [m for m in MANIFESTS if not m.custom]


def of_kind(kind: str) -> list[Manifest]:
    return [m for m in MANIFESTS if m.kind == kind]


def one(kind: str, name: str) -> Manifest:
    found = [m for m in of_kind(kind) if m.name == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(manifest: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = manifest.doc["spec"]["template"]["spec"]
    return spec


def all_containers(manifest: Manifest) -> list[dict[str, Any]]:
    spec = pod_spec(manifest)
    containers: list[dict[str, Any]] = spec.get("initContainers", []) + spec["containers"]
    return containers


WORKLOADS = of_kind("Deployment") + of_kind("Job")
DEPLOYMENTS = of_kind("Deployment")


def _ids(manifests: list[Manifest]) -> list[str]:
    return [str(m) for m in manifests]


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """kubernetes-validate's verdict on one resource (strict, fixed version): [] when valid."""
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path)
        return [f"{where}: {exc.message}"]
    return []


# --- schema validity ------------------------------------------------------------------------


def test_the_manifests_were_found() -> None:
    kinds = {m.kind for m in MANIFESTS}
    assert {"Deployment", "Service", "Job", "ConfigMap", "KafkaTopic", "ScaledObject"} <= kinds


@pytest.mark.parametrize("manifest", CORE, ids=_ids(CORE))
def test_core_resource_is_valid_in_strict_mode(manifest: Manifest) -> None:
    # SchemaNotFoundError would mean an unknown kind: it must fail here, not be skipped.
    assert schema_errors(manifest.doc) == [], str(manifest)


def test_only_the_expected_custom_resources() -> None:
    """Anything without a core schema must be one of the CRD kinds checked below."""
    for manifest in MANIFESTS:
        if manifest.custom:
            continue
        group = manifest.doc["apiVersion"].partition("/")[0]
        assert group not in {"keda.sh", "kafka.strimzi.io"}, f"{manifest}: unchecked CRD kind"


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        (lambda d: d["spec"]["template"]["spec"].pop("containers"), "containers is required"),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(
                readinesProbe={"httpGet": {"path": "/readyz", "port": "http"}}
            ),
            "a misspelled field (strict mode)",
        ),
        (lambda d: d["spec"].update(replicas="two"), "a string where an integer belongs"),
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["ports"][0].update(
                containerPort="http"
            ),
            "a port name as containerPort",
        ),
    ],
    ids=["no-containers", "misspelled-field", "replicas-string", "containerPort-string"],
)
def test_the_validator_is_live(broken: Any, why: str) -> None:
    """A deliberately broken Deployment is reported: the validation above is not vacuous."""
    doc = copy.deepcopy(one("Deployment", "touchpulse-ingest").doc)
    assert schema_errors(doc) == []
    broken(doc)
    assert schema_errors(doc) != [], why


def test_a_probe_on_an_undeclared_port_is_caught() -> None:
    """The schema allows any port name; the probe check below is what catches a wrong one."""
    doc = copy.deepcopy(one("Deployment", "touchpulse-ingest").doc)
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] = "htp"
    assert schema_errors(doc) == []  # valid to Kubernetes, and yet never ready
    with pytest.raises(AssertionError, match="no declared containerPort"):
        probe_port(doc["spec"]["template"]["spec"]["containers"][0], "readinessProbe")


# --- workloads --------------------------------------------------------------------------------


def probe_port(container: dict[str, Any], probe: str) -> int:
    """The containerPort a probe hits, resolving a port name; fails if none is declared."""
    port = container[probe]["httpGet"]["port"]
    for declared in container.get("ports", []):
        if port in (declared["containerPort"], declared.get("name")):
            number: int = declared["containerPort"]
            return number
    raise AssertionError(f"{container['name']}: {probe} port {port!r}: no declared containerPort")


def literal_env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def config_maps() -> dict[str, dict[str, str]]:
    return {m.name: m.doc.get("data", {}) for m in of_kind("ConfigMap")}


def effective_env(container: dict[str, Any]) -> dict[str, str]:
    """The variables a container gets from envFrom ConfigMaps and literal env values."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, "only ConfigMaps are used with envFrom"
        env.update(config_maps()[source["configMapRef"]["name"]])
    env.update(literal_env(container))
    return env


@pytest.mark.parametrize("spec", SERVICES, ids=[s.name for s in SERVICES])
def test_each_service_has_a_deployment_running_it(spec: ServiceSpec) -> None:
    deployment = one("Deployment", f"touchpulse-{spec.name}")
    (container,) = pod_spec(deployment)["containers"]
    assert container["command"] == ["python", "-m", spec.module]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert container["image"] == f"touchpulse/{spec.name}:{version}"
    # The port it listens on is the port the probes hit.
    env = effective_env(container)
    # Its own port setting, set explicitly, and no other service's.
    port_env = env_name(spec.port_setting)
    others = {env_name(s.port_setting) for s in SERVICES} - {port_env}
    assert port_env in literal_env(container)
    assert others.isdisjoint(env), f"{spec.name} sets another service's port"
    listens_on = int(env[port_env])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if probe in container:
            assert probe_port(container, probe) == listens_on, f"{spec.name} {probe}"
    # And it listens on the pod's address, not on loopback (the default).
    assert env.get(env_name("host")) == "0.0.0.0"  # noqa: S104 - that is the point


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=_ids(DEPLOYMENTS))
def test_deployment_probes(deployment: Manifest) -> None:
    for container in pod_spec(deployment)["containers"]:
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        probe_port(container, "readinessProbe")
        probe_port(container, "livenessProbe")


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=_ids(DEPLOYMENTS))
def test_deployments_restart_crashed_and_stuck_containers(deployment: Manifest) -> None:
    assert pod_spec(deployment)["restartPolicy"] == "Always"
    for container in pod_spec(deployment)["containers"]:
        # A slow start is given time by the startup probe, not killed by the liveness probe;
        # a stuck process is restarted after a few failed liveness probes, not the first.
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
        assert container["livenessProbe"].get("failureThreshold", 3) >= 2


@pytest.mark.parametrize("workload", WORKLOADS, ids=_ids(WORKLOADS))
def test_workload_resources_and_security(workload: Manifest) -> None:
    spec = pod_spec(workload)
    pod_security = spec["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == 10001
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["automountServiceAccountToken"] is False
    for container in all_containers(workload):
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= resources[bound].keys(), f"{container['name']} {bound}"
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True
        assert security.get("runAsUser", 10001) == 10001
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        assert "privileged" not in security
        # A read-only root needs somewhere to write temporary files.
        assert any(v["mountPath"] == "/tmp" for v in container["volumeMounts"])  # noqa: S108


@pytest.mark.parametrize("workload", WORKLOADS, ids=_ids(WORKLOADS))
def test_no_service_links(workload: Manifest) -> None:
    """Service links would inject TOUCHPULSE_INGEST_PORT=tcp://… and
    TOUCHPULSE_*_SERVICE_HOST for the Services named touchpulse-*: unknown or wrong-typed
    settings, which stop every process at start."""
    assert pod_spec(workload)["enableServiceLinks"] is False


def test_termination_grace_fits_the_graceful_shutdowns() -> None:
    scoring = pod_spec(one("Deployment", "touchpulse-scoring"))
    assert scoring["terminationGracePeriodSeconds"] > STOP_TIMEOUT_S
    uvicorn_graceful_s = 10  # timeout_graceful_shutdown in touchpulse_shared.http.serve
    for name, extra in (("ingest", 0.0), ("api", DISPATCHER_STOP_S)):
        spec = pod_spec(one("Deployment", f"touchpulse-{name}"))
        (container,) = spec["containers"]
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert spec["terminationGracePeriodSeconds"] > pre_stop + uvicorn_graceful_s + extra


def test_the_migrate_job_migrates_then_creates_topics() -> None:
    job = one("Job", "touchpulse-migrate")
    spec = pod_spec(job)
    assert [c["command"] for c in spec["initContainers"]] == [["touchpulse", "migrate"]]
    assert [c["command"] for c in spec["containers"]] == [["touchpulse", "topics"]]
    for container in all_containers(job):
        assert container["image"].startswith("touchpulse/tools:")
    assert spec["restartPolicy"] in {"OnFailure", "Never"}


# --- settings and secrets ---------------------------------------------------------------------


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built from the manifests alone, not from this machine's TOUCHPULSE_*."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX) or name in {CONFIG_FILE_ENV, "KAFKA_BOOTSTRAP_SERVERS"}:
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_environment")
@pytest.mark.parametrize("workload", WORKLOADS, ids=_ids(WORKLOADS))
def test_every_variable_is_a_setting_and_they_validate(
    workload: Manifest, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = {env_name(field) for field in Settings.model_fields}
    for container in all_containers(workload):
        names = [e["name"] for e in container.get("env", [])]
        assert len(names) == len(set(names)), f"{container['name']}: a variable set twice"
        env = effective_env(container)
        unknown = sorted(n for n in set(env) | set(names) if n not in known)
        assert unknown == [], f"{container['name']}: not settings: {unknown}"
        # The environment as the process gets it (secrets aside) loads the way the process
        # loads it: unknown TOUCHPULSE_ names and invalid values raise ConfigError.
        with monkeypatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            load_settings()


def test_the_settings_config_map_holds_only_settings() -> None:
    known = {env_name(field) for field in Settings.model_fields}
    data = config_maps()["touchpulse-config"]
    assert sorted(set(data) - known) == []
    # Secrets never live in a ConfigMap.
    assert env_name("database_url") not in data
    assert env_name("webhook_signing_key") not in data


def test_secrets_are_referenced_never_committed() -> None:
    assert of_kind("Secret") == [], "the Secret is created by operators (docs/deploy.md)"
    referenced = set()
    for workload in WORKLOADS:
        for container in all_containers(workload):
            for variable in container.get("env", []):
                ref = variable.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    assert ref["name"] == SECRET_NAME
                    referenced.add(ref["key"])
    assert referenced == SECRET_KEYS


def test_the_webhook_signing_key_is_shared_by_every_api_pod() -> None:
    """Unset, each api pod would make up its own key: receivers could verify none."""
    (container,) = pod_spec(one("Deployment", "touchpulse-api"))["containers"]
    names = {e["name"] for e in container["env"]}
    assert env_name("webhook_signing_key") in names


# --- the promise catalogue --------------------------------------------------------------------


def test_the_embedded_catalogue_is_deploy_promises_yaml() -> None:
    """The ConfigMap must carry deploy/promises.yaml exactly. If this fails, regenerate:
    kubectl create configmap touchpulse-promises --from-file=promises.yaml=deploy/promises.yaml
    --dry-run=client -o yaml > deploy/k8s/promises-configmap.yaml"""
    data = one("ConfigMap", "touchpulse-promises").doc["data"]
    assert set(data) == {"promises.yaml"}
    assert data["promises.yaml"].encode("utf-8") == CATALOGUE.read_bytes()


@pytest.mark.parametrize("name", ["touchpulse-ingest", "touchpulse-scoring", "touchpulse-api"])
def test_the_catalogue_is_mounted_where_the_setting_points(name: str) -> None:
    deployment = one("Deployment", name)
    (container,) = pod_spec(deployment)["containers"]
    path = PurePosixPath(effective_env(container)[env_name("promise_catalogue")])
    volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
    mounts = [m for m in container["volumeMounts"] if PurePosixPath(m["mountPath"]) == path.parent]
    assert len(mounts) == 1, f"{name}: nothing mounted at {path.parent}"
    # A subPath mount is never updated by the kubelet: the reload would never see a change.
    assert "subPath" not in mounts[0]
    source = volumes[mounts[0]["name"]]["configMap"]
    assert source["name"] == "touchpulse-promises"
    assert path.name in one("ConfigMap", source["name"]).doc["data"]


# --- availability and scaling -----------------------------------------------------------------


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, "only matchLabels selectors are used"
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=_ids(DEPLOYMENTS))
def test_every_deployment_has_one_disruption_budget(deployment: Manifest) -> None:
    labels = deployment.doc["spec"]["template"]["metadata"]["labels"]
    budgets = [
        p for p in of_kind("PodDisruptionBudget") if selects(p.doc["spec"]["selector"], labels)
    ]
    assert len(budgets) == 1, f"{deployment}: {len(budgets)} PodDisruptionBudgets"
    spec = budgets[0].doc["spec"]
    assert spec.get("maxUnavailable") == 1 or spec.get("minAvailable") == 1


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=_ids(DEPLOYMENTS))
def test_every_deployment_has_one_autoscaler(deployment: Manifest) -> None:
    """Two pods at least; the autoscaler owns the count, so the Deployment sets none (a
    `replicas` would be re-applied by every `kubectl apply`)."""
    assert "replicas" not in deployment.doc["spec"]
    hpas = [
        h.doc["spec"]
        for h in of_kind("HorizontalPodAutoscaler")
        if h.doc["spec"]["scaleTargetRef"]["name"] == deployment.name
    ]
    scaled = [
        s.doc["spec"]
        for s in of_kind("ScaledObject")
        if s.doc["spec"]["scaleTargetRef"]["name"] == deployment.name
    ]
    assert len(hpas) + len(scaled) == 1, f"{deployment}: {len(hpas)} HPAs, {len(scaled)} KEDA"
    for hpa in hpas:
        assert hpa["scaleTargetRef"]["kind"] == "Deployment"
        assert hpa["minReplicas"] >= 2
        assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]
    for scaled_object in scaled:
        assert scaled_object["minReplicaCount"] >= 2


def test_scoring_scales_on_lag_up_to_the_partition_count() -> None:
    scaled = one("ScaledObject", "touchpulse-scoring").doc
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "touchpulse-scoring"
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"} <= meta.keys()
    settings = config_maps()["touchpulse-config"]
    defaults = Settings.model_fields
    assert meta["consumerGroup"] == settings.get(
        env_name("scoring_group_id"), defaults["scoring_group_id"].default
    )
    assert meta["consumerGroup"] == defaults["scoring_group_id"].default
    assert meta["topic"] == defaults["events_topic"].default
    assert meta["bootstrapServers"] == settings[env_name("kafka_bootstrap_servers")]
    assert int(meta["lagThreshold"]) > 0
    assert meta.get("allowIdleConsumers", "false") == "false"
    events = [t for t in of_kind("KafkaTopic") if t.doc["spec"]["topicName"] == meta["topic"]]
    (topic,) = events
    partitions = topic.doc["spec"]["partitions"]
    assert 2 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
    assert spec["maxReplicaCount"] == partitions  # use every partition, never more
    assert int(settings[env_name("events_partitions")]) == partitions
    # A rollout must not add a member beyond the autoscaler's count either.
    strategy = one("Deployment", "touchpulse-scoring").doc["spec"]["strategy"]
    assert strategy["rollingUpdate"]["maxSurge"] == 0


@pytest.mark.parametrize("service", of_kind("Service"), ids=_ids(of_kind("Service")))
def test_services_reach_a_declared_port(service: Manifest) -> None:
    spec = service.doc["spec"]
    (deployment,) = [
        d
        for d in DEPLOYMENTS
        if selects(
            {"matchLabels": spec["selector"]}, d.doc["spec"]["template"]["metadata"]["labels"]
        )
    ]
    (container,) = pod_spec(deployment)["containers"]
    declared = {p.get("name") for p in container["ports"]} | {
        p["containerPort"] for p in container["ports"]
    }
    for port in spec["ports"]:
        assert port["targetPort"] in declared
    if deployment.name == "touchpulse-scoring":
        assert spec["clusterIP"] == "None"  # headless: one address per pod for scraping
    else:
        assert spec.get("type", "ClusterIP") == "ClusterIP"


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=_ids(DEPLOYMENTS))
def test_prometheus_scrapes_the_metrics_port(deployment: Manifest) -> None:
    template = deployment.doc["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    (container,) = template["spec"]["containers"]
    assert int(annotations["prometheus.io/port"]) in {
        p["containerPort"] for p in container["ports"]
    }
    spread = template["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} >= {"kubernetes.io/hostname"}


# --- Kafka (Strimzi) --------------------------------------------------------------------------


def test_the_kafka_cluster_is_replicated() -> None:
    (kafka,) = of_kind("Kafka")
    (pool,) = of_kind("KafkaNodePool")
    assert pool.doc["metadata"]["labels"]["strimzi.io/cluster"] == kafka.name
    assert pool.doc["spec"]["replicas"] == 3
    assert set(pool.doc["spec"]["roles"]) == {"controller", "broker"}  # KRaft, no ZooKeeper
    assert pool.doc["spec"]["storage"]["type"] in {"jbod", "persistent-claim"}
    spec = kafka.doc["spec"]
    assert "zookeeper" not in spec
    config = spec["kafka"]["config"]
    assert config["default.replication.factor"] == 3
    assert config["min.insync.replicas"] == 2
    assert config["offsets.topic.replication.factor"] == 3
    assert config["auto.create.topics.enable"] is False
    assert spec["kafka"]["listeners"], "a listener for the clients"
    bootstrap = config_maps()["touchpulse-config"][env_name("kafka_bootstrap_servers")]
    plain = next(x for x in spec["kafka"]["listeners"] if x["tls"] is False)
    assert bootstrap == f"{kafka.name}-kafka-bootstrap.{NAMESPACE}.svc:{plain['port']}"


@pytest.mark.usefixtures("clean_environment")
def test_the_topics_are_what_touchpulse_creates_at_rf_3() -> None:
    """Strimzi's KafkaTopics and `touchpulse topics` (the migrate Job) agree exactly, so
    whichever creates a topic first, the other finds it as it expects."""
    (kafka,) = of_kind("Kafka")
    topics = {}
    for manifest in of_kind("KafkaTopic"):
        assert manifest.doc["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert manifest.doc["metadata"]["labels"]["strimzi.io/cluster"] == kafka.name
        spec = manifest.doc["spec"]
        assert {"topicName", "partitions", "replicas", "config"} <= spec.keys()
        assert spec["replicas"] == 3
        assert spec["config"]["min.insync.replicas"] == "2"
        topics[spec["topicName"]] = spec
    expected = topic_specs(Settings(topic_replication_factor=3))
    assert sorted(topics) == sorted(t.name for t in expected)
    for want in expected:
        got = topics[want.name]
        assert got["partitions"] == want.partitions, want.name
        assert got["replicas"] == want.replication_factor, want.name
        assert {k: str(v) for k, v in got["config"].items()} == dict(want.configs), want.name


# --- kustomize --------------------------------------------------------------------------------


KUSTOMIZATIONS = sorted(K8S.rglob("kustomization.yaml"))


@pytest.mark.parametrize(
    "kustomization", KUSTOMIZATIONS, ids=[str(k.relative_to(K8S)) for k in KUSTOMIZATIONS]
)
def test_the_kustomization_lists_every_file(kustomization: Path) -> None:
    doc = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
    assert doc["apiVersion"] == KUSTOMIZE_API
    assert doc["kind"] == "Kustomization"
    assert doc["namespace"] == NAMESPACE
    folder = kustomization.parent
    files = {p.name for p in folder.iterdir() if p.is_file() and p.name != kustomization.name}
    assert sorted(doc["resources"]) == sorted(files)


def test_every_resource_lands_in_the_namespace() -> None:
    for manifest in MANIFESTS:
        assert manifest.doc["metadata"].get("namespace", NAMESPACE) == NAMESPACE, str(manifest)


@pytest.mark.parametrize("folder", [K8S, K8S / "kafka"], ids=["k8s", "k8s/kafka"])
def test_kustomize_builds_offline(folder: Path) -> None:
    """`kubectl apply -k` works on these folders as they are (no load-restrictor flag)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the kustomizations are checked by listing only")
    built = subprocess.run(  # noqa: S603 - a fixed argument list, no shell
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    expected = [m for m in MANIFESTS if m.path.parent == folder]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == sorted(
        (m.kind, m.name) for m in expected
    )
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE
