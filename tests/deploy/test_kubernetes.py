"""The Kubernetes manifests in `deploy/kubernetes` are valid and agree with the code they run.

Validity: every Kubernetes object passes kubernetes-validate's strict schemas (unknown fields
fail) for the oldest supported and the newest known Kubernetes; KEDA's objects pass the CRD
schemas vendored in `schemas/keda`. Agreement: commands run modules that exist, probes and scrape
annotations use the ports and paths the services serve (read from `Settings`, `create_app` and
each consumer's `build`), every variable the manifests set is a setting, the secrets the
services require are provided, and KEDA watches the queues the consumers read (`Topology`).
Nothing here reaches a network or a cluster: what a cluster adds (admission, RBAC, CEL rules,
the image's contents) is not covered.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import re
import secrets
from fractions import Fraction
from importlib.metadata import version
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version, major_minor
from pydantic import ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from shared.broker import JOB_QUEUES, Topology
from shared.config import Settings, describe
from shared.health import PING_TIMEOUT_SECONDS, Health, health_routes

from api.app import create_app

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
KEDA_SCHEMAS = Path(__file__).resolve().parent / "schemas" / "keda"

OLDEST_KUBERNETES = "1.30"
KUBERNETES_VERSIONS = (OLDEST_KUBERNETES, major_minor(latest_version()))
IMAGE = f"ghcr.io/your-org/2fa-service:{version('tfa-service')}"
# Variables the manifests may set that are not fields of Settings, each with its reason.
DOCUMENTED_EXTRAS: dict[str, str] = {}
# Secrets the services refuse to start without (Settings fields with no default).
REQUIRED = sorted(name for name, field in Settings.model_fields.items() if field.is_required())
# What the README tells operators to apply before everything else.
MIGRATE_SELECTOR = {"app.kubernetes.io/component": "migrate"}
DNS_1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")

Doc = dict[str, Any]


def _documents(name: str) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all((MANIFESTS / name).read_text()) if doc]


KUSTOMIZATION: Doc = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
APPLIED: list[Doc] = [doc for name in KUSTOMIZATION["resources"] for doc in _documents(name)]
SECRET = _documents("secret.example.yaml")[0]
ALL = [*APPLIED, SECRET]


def _id(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def _is_keda(doc: Doc) -> bool:
    return str(doc["apiVersion"]).startswith("keda.sh/")


def _of_kind(kind: str) -> list[Doc]:
    return [doc for doc in APPLIED if doc["kind"] == kind]


def _named(kind: str, name: str) -> Doc:
    matches = [doc for doc in _of_kind(kind) if doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} named {name}, found {len(matches)}"
    return matches[0]


CONFIG = _of_kind("ConfigMap")[0]
DEPLOYMENTS = _of_kind("Deployment")
WORKLOADS = [*DEPLOYMENTS, *_of_kind("Job")]


def _container(workload: Doc) -> Doc:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, f"{_id(workload)}: one container per pod"
    return containers[0]


def _module(workload: Doc) -> str:
    command = _container(workload)["command"]
    assert command[:2] == ["python", "-m"] and len(command) == 3, f"{_id(workload)}: {command}"
    return str(command[2])


def _deployment_running(module: str) -> Doc:
    matches = [d for d in DEPLOYMENTS if _module(d) == module]
    assert len(matches) == 1, f"expected one Deployment running python -m {module}"
    return matches[0]


CONSUMER_DEPLOYMENTS = [d for d in DEPLOYMENTS if _module(d) != "api"]


def _quantity(value: object) -> Fraction:
    units: dict[str, Fraction] = {
        "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30),
        "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9),
        "m": Fraction(1, 1000), "": Fraction(1),
    }
    match = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|k|M|G|m|)", str(value))
    assert match, f"not a quantity: {value!r}"
    return Fraction(match[1]) * units[match[2]]


def _source_data(ref: Doc, kind: str) -> dict[str, str]:
    source = SECRET if kind == "Secret" else _named("ConfigMap", ref["name"])
    assert source["metadata"]["name"] == ref["name"], f"no {kind} named {ref['name']}"
    return dict(source.get("stringData") or source.get("data") or {})


def _environment(container: Doc) -> dict[str, str]:
    """The variables the container starts with, as the kubelet would set them."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_source_data(source["configMapRef"], "ConfigMap"))
        else:
            env.update(_source_data(source["secretRef"], "Secret"))
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            field = var["valueFrom"]["resourceFieldRef"]
            amount = _quantity(_resource(container, field["resource"]))
            env[var["name"]] = str(math.ceil(amount / _quantity(field.get("divisor", "1"))))
    return env


def _resource(container: Doc, dotted: str) -> object:
    kind, name = dotted.split(".")
    return container["resources"][kind][name]


class _OnlyGiven(Settings):
    """Settings from the given values alone: this process's environment and `.env` are ignored."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _with_real_secrets(env: dict[str, str]) -> dict[str, str]:
    """The environment as it is once the example Secret's placeholders are replaced."""
    return {**env, **{name: secrets.token_hex(32) for name in REQUIRED if name in env}}


def _settings(workload: Doc) -> Settings:
    return _OnlyGiven.model_validate(_with_real_secrets(_environment(_container(workload))))


def _port(container: Doc, port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert numbers, f"container {container['name']} has no port named {port}"
    return int(numbers[0])


def _selects(selector: dict[str, str], workload: Doc) -> bool:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(key) == value for key, value in selector.items())


def _served_routes(settings: Settings) -> set[str]:
    app = create_app(settings)
    return {route.resource.canonical for route in app.router.routes()
            if route.method == "GET" and route.resource is not None}


def _consumer(workload: Doc) -> Any:
    main = importlib.import_module(f"{_module(workload)}.main")
    return main.build(_settings(workload))


def _scaled_object_for(deployment: Doc) -> Doc:
    name = deployment["metadata"]["name"]
    matches = [s for s in _of_kind("ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == name]
    assert len(matches) == 1, f"expected one ScaledObject scaling {name}, found {len(matches)}"
    return matches[0]


# --- valid for Kubernetes and KEDA ------------------------------------------------------------


@pytest.mark.parametrize("kubernetes", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("doc", [d for d in ALL if not _is_keda(d)], ids=_id)
def test_manifest_is_valid_kubernetes(doc: Doc, kubernetes: str) -> None:
    """Strict: a misspelt or misplaced field fails, as `kubectl apply --validate=strict` would."""
    kubernetes_validate.validate(doc, kubernetes, strict=True)


@pytest.mark.parametrize("doc", [d for d in ALL if _is_keda(d)], ids=_id)
def test_keda_manifest_is_valid_for_its_crd(doc: Doc) -> None:
    assert doc["apiVersion"] == "keda.sh/v1alpha1"
    schema = json.loads((KEDA_SCHEMAS / f"{doc['kind'].lower()}_v1alpha1.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(doc)


def test_kustomization_applies_every_manifest_except_the_example_secret() -> None:
    """A file left out would silently not be deployed; the example Secret must never be."""
    not_applied = {"kustomization.yaml", "secret.example.yaml"}
    files = {p.name for p in MANIFESTS.glob("*.yaml")} - not_applied
    assert sorted(KUSTOMIZATION["resources"]) == sorted(files)
    assert KUSTOMIZATION["kind"] == "Kustomization"
    assert not [d for d in APPLIED if d["kind"] == "Secret"]


def test_manifests_name_no_namespace_and_use_valid_names() -> None:
    """They go wherever `kubectl -n` or an overlay puts them; Services need DNS-1035 names."""
    assert "namespace" not in KUSTOMIZATION
    for doc in ALL:
        name = doc["metadata"]["name"]
        assert "namespace" not in doc["metadata"], _id(doc)
        pattern = DNS_1035_LABEL if doc["kind"] == "Service" else DNS_1123_LABEL
        assert pattern.match(name), _id(doc)


# --- what runs ---------------------------------------------------------------------------------


def test_every_service_and_the_migration_have_a_workload() -> None:
    modules = sorted(_module(w) for w in WORKLOADS)
    assert modules == ["api", "audit", "notifier", "shared.migrate", "webhook_dispatcher"]


@pytest.mark.parametrize("workload", WORKLOADS, ids=_id)
def test_command_runs_an_importable_module(workload: Doc) -> None:
    """`python -m <module>` needs the module, or for a package its `__main__`."""
    module = _module(workload)
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{_id(workload)}: no module {module}"
    if spec.submodule_search_locations is not None:
        main = importlib.util.find_spec(f"{module}.__main__")
        assert main is not None, f"{module} has no __main__"


@pytest.mark.parametrize("workload", WORKLOADS, ids=_id)
def test_workload_runs_the_released_image(workload: Doc) -> None:
    """One image for every service, tagged with the version being released."""
    assert _container(workload)["image"] == IMAGE


@pytest.mark.parametrize("workload", WORKLOADS, ids=_id)
def test_pods_run_as_non_root_on_a_read_only_root(workload: Doc) -> None:
    """The image's USER is a name, so the kubelet can enforce runAsNonRoot only with a uid."""
    pod = workload["spec"]["template"]["spec"]
    container = _container(workload)
    assert pod["securityContext"]["runAsNonRoot"] is True
    uid = pod["securityContext"]["runAsUser"]
    assert isinstance(uid, int) and uid > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert not context.get("privileged")
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    assert "/tmp" in mounts, "Python and its libraries expect a writable /tmp"


@pytest.mark.parametrize("workload", WORKLOADS, ids=_id)
def test_containers_have_resource_requests_within_limits(workload: Doc) -> None:
    resources = _container(workload)["resources"]
    for name in ("cpu", "memory"):
        assert _quantity(resources["requests"][name]) <= _quantity(resources["limits"][name]), name


# --- settings ----------------------------------------------------------------------------------


def test_config_and_secret_set_only_settings_and_never_the_same_one() -> None:
    """An unknown name would be ignored by the services without a word (extra="ignore")."""
    known = set(Settings.model_fields) | set(DOCUMENTED_EXTRAS)
    config, secret = set(CONFIG["data"]), set(SECRET["stringData"])
    assert config <= known, sorted(config - known)
    assert secret <= known, sorted(secret - known)
    assert not config & secret, sorted(config & secret)
    for workload in WORKLOADS:
        names = set(_environment(_container(workload)))
        assert names <= known, (_id(workload), sorted(names - known))


@pytest.mark.parametrize("workload", WORKLOADS, ids=_id)
def test_every_workload_gets_the_required_secrets(workload: Doc) -> None:
    """Each process stops at start-up without them, the migration included."""
    env = _environment(_container(workload))
    assert set(REQUIRED) <= set(SECRET["stringData"])
    assert [name for name in REQUIRED if name not in env] == []
    assert "DATABASE_URL" in env


@pytest.mark.parametrize("workload", WORKLOADS, ids=_id)
def test_workload_settings_load_once_the_secret_is_filled_in(workload: Doc) -> None:
    """The ConfigMap's values parse as the services parse them (types, lists, booleans)."""
    settings = _settings(workload)
    assert settings.DATABASE_URL == SECRET["stringData"]["DATABASE_URL"]


def test_example_secret_applied_unchanged_stops_start_up() -> None:
    """Its placeholders are too short to pass as secrets, so they cannot go live by mistake."""
    env = {**CONFIG["data"], **SECRET["stringData"]}
    with pytest.raises(ValidationError) as failure:
        _OnlyGiven.model_validate(env)
    message = describe(failure.value)
    for name in REQUIRED:
        assert f"{name} is too short" in message


def test_example_secret_explains_how_to_generate_the_secrets() -> None:
    assert "openssl rand -hex 32" in (MANIFESTS / "secret.example.yaml").read_text()


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=_id)
def test_health_memory_limit_is_the_container_limit(deployment: Doc) -> None:
    """/health reports memory as degraded before the kubelet kills the pod, not after."""
    container = _container(deployment)
    limit_mib = _quantity(_resource(container, "limits.memory")) / 2**20
    assert _settings(deployment).HEALTH_MEMORY_LIMIT_MB == math.ceil(limit_mib)


# --- probes, ports, metrics -------------------------------------------------------------------


def test_api_probes_ask_the_api_health_routes_on_its_port() -> None:
    deployment = _deployment_running("api")
    container = _container(deployment)
    settings = _settings(deployment)
    served = _served_routes(settings)
    for probe, path in [("startupProbe", "/api/health/live"), ("livenessProbe", "/api/health/live"),
                        ("readinessProbe", "/api/health/ready")]:
        request = container[probe]["httpGet"]
        assert request["path"] == path, probe
        assert path in served, f"the API serves no GET {path}"
        assert _port(container, request["port"]) == settings.PORT, probe


@pytest.mark.parametrize("deployment", CONSUMER_DEPLOYMENTS, ids=_id)
def test_consumer_probes_ask_its_health_server_on_its_port(deployment: Doc) -> None:
    container = _container(deployment)
    consumer = _consumer(deployment)
    suffixes = {suffix for suffix, _ in health_routes(Health("probe"))}
    for probe, suffix in [("startupProbe", "/live"), ("livenessProbe", "/live"),
                          ("readinessProbe", "/ready")]:
        request = container[probe]["httpGet"]
        assert suffix in suffixes
        assert request["path"] == f"/health{suffix}", probe
        assert _port(container, request["port"]) == consumer.health_port, probe


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=_id)
def test_readiness_probe_waits_for_the_dependency_pings(deployment: Doc) -> None:
    """A probe that gives up before the pings' own timeout would mark a slow pod unready."""
    assert _container(deployment)["readinessProbe"]["timeoutSeconds"] > PING_TIMEOUT_SECONDS


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=_id)
def test_prometheus_scrapes_metrics_where_the_service_serves_them(deployment: Doc) -> None:
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    container = _container(deployment)
    if _module(deployment) == "api":
        settings = _settings(deployment)
        port = settings.PORT
        assert "/metrics" in _served_routes(settings)
    else:
        port = _consumer(deployment).health_port
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == port
    assert port in {p["containerPort"] for p in container["ports"]}


def test_ingress_sends_only_api_paths_to_the_api() -> None:
    """/api reaches the API Service and its port; /metrics, at the root, stays in the cluster."""
    deployment = _deployment_running("api")
    container = _container(deployment)
    service = _named("Service", "tfa-api")
    assert _selects(service["spec"]["selector"], deployment)
    others = [d for d in DEPLOYMENTS if d is not deployment]
    assert not [d for d in others if _selects(service["spec"]["selector"], d)]
    (ingress,) = _of_kind("Ingress")
    paths = [path for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
    assert paths
    for path in paths:
        assert (path["path"], path["pathType"]) == ("/api", "Prefix")
        backend = path["backend"]["service"]
        assert backend["name"] == service["metadata"]["name"]
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == backend["port"]["name"]]
        assert _port(container, port["targetPort"]) == _settings(deployment).PORT


# --- scaling and disruptions ------------------------------------------------------------------


def test_api_scales_on_cpu_and_consumers_on_their_queues() -> None:
    """One autoscaler per Deployment; none has a replica count that a re-apply would reset."""
    (hpa,) = _of_kind("HorizontalPodAutoscaler")
    api = _deployment_running("api")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", api["metadata"]["name"])
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "cpu" in _container(api)["resources"]["requests"], "CPU utilization needs a CPU request"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    scaled = [so["spec"]["scaleTargetRef"]["name"] for so in _of_kind("ScaledObject")]
    assert sorted(scaled) == sorted(d["metadata"]["name"] for d in CONSUMER_DEPLOYMENTS)
    for deployment in DEPLOYMENTS:
        assert "replicas" not in deployment["spec"], _id(deployment)


@pytest.mark.parametrize("deployment", CONSUMER_DEPLOYMENTS, ids=_id)
def test_keda_scales_each_consumer_on_the_queues_it_reads(deployment: Doc) -> None:
    consumer = _consumer(deployment)
    topology = Topology(_settings(deployment).BROKER_PREFIX)
    expected = {topology.queue(consumer.service)}
    if consumer.service in JOB_QUEUES:
        expected.add(topology.jobs_queue(consumer.service))
    assert consumer.topology.queue(consumer.service) == Topology("").queue(consumer.service)
    scaled_object = _scaled_object_for(deployment)
    spec = scaled_object["spec"]
    assert spec["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"], "consumers never scale to zero"
    triggers = spec["triggers"]
    assert {t["metadata"]["queueName"] for t in triggers} == expected
    assert len(triggers) == len(expected)
    for trigger in triggers:
        assert trigger["type"] == "rabbitmq"
        assert trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["metadata"]["protocol"] == "amqp"
        assert int(trigger["metadata"]["value"]) > 0


def test_webhook_dispatcher_scales_on_its_jobs_queue_too() -> None:
    """Retries and deferred deliveries wait in `webhook-dispatcher.jobs`, not the events queue."""
    spec = _scaled_object_for(_deployment_running("webhook_dispatcher"))["spec"]
    queues = {t["metadata"]["queueName"] for t in spec["triggers"]}
    assert Topology("").jobs_queue("webhook-dispatcher") in queues


def test_keda_reads_the_queues_with_the_services_rabbitmq_url() -> None:
    (auth,) = _of_kind("TriggerAuthentication")
    for scaled_object in _of_kind("ScaledObject"):
        for trigger in scaled_object["spec"]["triggers"]:
            assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
            kind = trigger["authenticationRef"].get("kind", "TriggerAuthentication")
            assert kind == "TriggerAuthentication"
    (ref,) = auth["spec"]["secretTargetRef"]
    secret_name = SECRET["metadata"]["name"]
    assert (ref["parameter"], ref["name"], ref["key"]) == ("host", secret_name, "RABBITMQ_URL")
    assert "RABBITMQ_URL" in Settings.model_fields
    assert SECRET["stringData"]["RABBITMQ_URL"].startswith("amqp://")


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=_id)
def test_disruption_budget_covers_the_pods_and_lets_nodes_drain(deployment: Doc) -> None:
    budgets = [p for p in _of_kind("PodDisruptionBudget")
               if _selects(p["spec"]["selector"]["matchLabels"], deployment)]
    assert len(budgets) == 1, f"{_id(deployment)}: {len(budgets)} PodDisruptionBudgets"
    (budget,) = budgets
    others = [d for d in DEPLOYMENTS if d is not deployment]
    assert not [d for d in others if _selects(budget["spec"]["selector"]["matchLabels"], d)]
    assert _selects(deployment["spec"]["selector"]["matchLabels"], deployment)
    if _module(deployment) == "api":
        minimum = _of_kind("HorizontalPodAutoscaler")[0]["spec"]["minReplicas"]
    else:
        minimum = _scaled_object_for(deployment)["spec"]["minReplicaCount"]
    spec = budget["spec"]
    allowed = spec["maxUnavailable"] if "maxUnavailable" in spec else minimum - spec["minAvailable"]
    assert isinstance(allowed, int) and allowed >= 1, "a drain would wait forever"


# --- the migration -----------------------------------------------------------------------------


def test_migration_job_can_be_applied_and_run_before_the_rest() -> None:
    """The README applies `-l app.kubernetes.io/component=migrate` first: only the Job, needing
    nothing but the Secret, which exists by then."""
    selected = [d for d in APPLIED if MIGRATE_SELECTOR.items() <= d["metadata"]["labels"].items()]
    assert [d["kind"] for d in selected] == ["Job"]
    (job,) = selected
    assert _module(job) == "shared.migrate"
    container = _container(job)
    assert container["envFrom"] == [{"secretRef": {"name": SECRET["metadata"]["name"]}}]
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in {"Never", "OnFailure"}
    assert job["spec"]["backoffLimit"] >= 1
    assert "kubectl apply -k deploy/kubernetes -l app.kubernetes.io/component=migrate" in (
        ROOT / "deploy" / "README.md"
    ).read_text()
