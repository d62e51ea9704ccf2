"""Every manifest of cluster/kuberay/ checked offline: no Kubernetes cluster, no Ray cluster.

- KubeRay resources (ray.io/v1) against the operator's CRD schemas in ../shared/kuberay-crds/
  (beside the repository: CI's clean clone gets a copy of shared/ there), made strict: an object
  whose schema lists its properties takes no others, so a misspelt field fails.
- Core resources with kubernetes-validate (strict: unknown fields fail) for one Kubernetes version.
- The RayService's serveConfigV2 against Ray's ServeDeploySchema, which silently drops unknown keys:
  the parsed model's dump must give back the input unchanged.
- The generated files are what cluster/kuberay_manifests.py makes from configs/serve.yaml now.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from augment_core.settings import Settings
from cluster import kuberay_manifests as km
from serve_apps import deploy

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[3]
KUBERAY = REPO / "cluster" / "kuberay"
CRDS = REPO.parent / "shared" / "kuberay-crds"
CRD_FILES = {
    "RayCluster": "ray.io_rayclusters.yaml",
    "RayJob": "ray.io_rayjobs.yaml",
    "RayService": "ray.io_rayservices.yaml",
}
# A version kubernetes-validate bundles, and what current managed clusters run.
KUBERNETES_VERSION = "1.33"
# Settings deliberately left unset in the ConfigMap (configmap.yaml says why for each).
UNSET_SETTINGS = {"AUGMENT_RAY_ADDRESS", "AUGMENT_COOKIE_SECURE", "AUGMENT_DURABLE_WRITE_SECONDS"}
# What the pods cannot do without.
REQUIRED_IN_CLUSTER = {
    "AUGMENT_STORAGE_ROOT", "AUGMENT_S3_ENDPOINT_URL", "AUGMENT_WORKFLOWS_DIR", "AUGMENT_PROVIDERS_FILE",
    "AUGMENT_CACHE_BACKEND", "AUGMENT_ALLOWED_HOSTS",
}


def manifest_files() -> list[Path]:
    return sorted(KUBERAY.rglob("*.yaml"))


def documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in manifest_files():
        for i, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if doc is not None:
                docs.append((f"{path.relative_to(KUBERAY)}[{i}] {doc.get('kind')}", doc))
    return docs


DOCS = documents()
RAY_DOCS = [(name, doc) for name, doc in DOCS if doc["apiVersion"].startswith("ray.io/")]
CORE_DOCS = [(name, doc) for name, doc in DOCS if not doc["apiVersion"].startswith("ray.io/")]


def by_kind(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in DOCS if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in cluster/kuberay/, found {len(found)}"
    return found[0]


def example_secret() -> dict[str, Any]:
    return by_kind("Secret")


def serve_config_of(service: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(service["spec"]["serveConfigV2"])


# --- strict CRD schemas ------------------------------------------------------------------------

def strict(schema: Any) -> Any:
    """The schema with `additionalProperties: false` wherever it lists properties and says nothing
    of others (unless it keeps unknown fields on purpose, x-kubernetes-preserve-unknown-fields)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


@functools.cache
def crd(kind: str) -> dict[str, Any]:
    path = CRDS / CRD_FILES[kind]
    if not path.exists():
        pytest.fail(f"the KubeRay CRDs are missing: expected {path} (shared/kuberay-crds beside the repository)")
    # About 1 MB each: libyaml's loader where PyYAML has it (ten times the pure-Python one).
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)


@functools.cache
def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    (version,) = [v for v in crd(kind)["spec"]["versions"] if v["name"] == "v1"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema)


def crd_errors(doc: dict[str, Any]) -> list[str]:
    errors = crd_validator(doc["kind"]).iter_errors(doc)
    return [f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in errors]


def test_the_crds_are_kuberays_v1() -> None:
    for kind in CRD_FILES:
        assert crd(kind)["kind"] == "CustomResourceDefinition"
        assert crd(kind)["spec"]["names"]["kind"] == kind
        assert "v1" in [v["name"] for v in crd(kind)["spec"]["versions"]]


def test_every_kind_of_kuberay_resource_is_there() -> None:
    assert sorted(doc["kind"] for _, doc in RAY_DOCS) == ["RayCluster", "RayJob", "RayService"]


@pytest.mark.parametrize("name,doc", RAY_DOCS, ids=[name for name, _ in RAY_DOCS])
def test_kuberay_resources_match_their_crd_strictly(name: str, doc: dict[str, Any]) -> None:
    assert doc["apiVersion"] == "ray.io/v1"
    assert crd_errors(doc) == []


@pytest.mark.parametrize("mutate,field", [
    (lambda c: c["spec"]["workerGroupSpecs"][0].update(minReplica=1), "minReplica"),
    (lambda c: c["spec"].update(enableInTreeAutoscalling=True), "enableInTreeAutoscalling"),
    (lambda c: c["spec"]["autoscalerOptions"].update(verison="v2"), "verison"),
    (lambda c: c["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].update(imagePullPolicyy="Always"),
     "imagePullPolicyy"),
    (lambda c: c["spec"]["gcsFaultToleranceOptions"]["redisPassword"]["valueFrom"].update(secretKeyref={}),
     "secretKeyref"),
])
def test_a_misspelt_field_fails_the_crd_check(mutate: Any, field: str) -> None:
    cluster = copy.deepcopy(by_kind("RayCluster"))
    mutate(cluster)
    errors = crd_errors(cluster)
    assert errors and any(field in e for e in errors), errors


def test_the_crd_check_also_catches_missing_and_mistyped_fields() -> None:
    cluster = copy.deepcopy(by_kind("RayCluster"))
    del cluster["spec"]["workerGroupSpecs"][0]["maxReplicas"]
    assert any("maxReplicas" in e for e in crd_errors(cluster))
    cluster = copy.deepcopy(by_kind("RayCluster"))
    cluster["spec"]["autoscalerOptions"]["version"] = "v3"
    assert crd_errors(cluster)


def test_the_ray_cluster_autoscales_with_gcs_fault_tolerance() -> None:
    for spec in (by_kind("RayCluster")["spec"], by_kind("RayService")["spec"]["rayClusterConfig"]):
        assert spec["rayVersion"] == km.RAY_VERSION
        assert spec["enableInTreeAutoscaling"] is True
        assert spec["autoscalerOptions"]["version"] == "v2"
        assert spec["authOptions"] == {"mode": "token"}
        gcs = spec["gcsFaultToleranceOptions"]
        assert gcs["redisAddress"] == km.REDIS_ADDRESS
        password = {"secretKeyRef": {"name": km.SECRET_NAME, "key": "redis-password"}}
        assert gcs["redisPassword"] == {"valueFrom": password}
        (group,) = spec["workerGroupSpecs"]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        head = spec["headGroupSpec"]
        assert head["rayStartParams"]["metrics-export-port"] == "8080"
        assert group["rayStartParams"]["metrics-export-port"] == "8080"
        for template in (head["template"], group["template"]):
            (container,) = template["spec"]["containers"]
            assert {"name": "metrics", "containerPort": 8080} in container["ports"]
            assert container["securityContext"]["runAsNonRoot"] is True


def test_the_ray_job_runs_the_sample_workflow_on_the_ray_cluster() -> None:
    job = by_kind("RayJob")["spec"]
    assert job["entrypoint"] == "augment run configs/workflows/organisations.yaml"
    assert (REPO / "configs" / "workflows" / "organisations.yaml").exists()
    assert job["clusterSelector"] == {"ray.io/cluster": by_kind("RayCluster")["metadata"]["name"]}


# --- generated from one source -------------------------------------------------------------------

def test_the_generated_manifests_are_up_to_date() -> None:
    assert km.stale() == [], "run: python -m cluster.kuberay_manifests"


def test_the_check_mode_tells_a_stale_file(tmp_path: Path) -> None:
    assert km.main(["--out", str(tmp_path)]) == 0
    assert km.main(["--out", str(tmp_path), "--check"]) == 0
    (tmp_path / "rayservice.yaml").write_text("stale\n", encoding="utf-8")
    assert km.main(["--out", str(tmp_path), "--check"]) == 1


def test_serve_config_v2_is_configs_serve_yaml_made_for_kubernetes() -> None:
    committed = serve_config_of(by_kind("RayService"))
    assert committed == km.in_cluster_serve_config(REPO / "configs" / "serve.yaml")
    # ...which is what `augment serve` deploys with Ray's Python proxy, with only host, proxy
    # location and the API's replicas changed: the generator's copy of deploy.py's prefixing has
    # not drifted from it.
    local = deploy.load_config(REPO / "configs" / "serve.yaml")
    deploy.single_replica_panels(local)
    [api] = [app for app in local["applications"] if app["name"] == "api"]
    api["deployments"][0]["autoscaling_config"]["max_replicas"] = km.SERVE_MAX_WORKERS
    local["http_options"] = {**local.get("http_options", {}), "host": "0.0.0.0", "port": 8000}
    local["proxy_location"] = "EveryNode"
    assert committed == local


def test_a_prefix_moves_every_route_as_augment_serve_does() -> None:
    generated = km.in_cluster_serve_config(REPO / "configs" / "serve.yaml", prefix="augment")
    local = deploy.load_config(REPO / "configs" / "serve.yaml", prefix="augment")
    deploy.single_replica_panels(local)
    assert [a["route_prefix"] for a in generated["applications"]] == [a["route_prefix"] for a in local["applications"]]
    assert [a.get("args") for a in generated["applications"]] == [a.get("args") for a in local["applications"]]


def test_a_changed_serve_yaml_changes_the_rayservice(tmp_path: Path) -> None:
    source = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text(encoding="utf-8"))
    source["applications"][0]["deployments"][0]["max_ongoing_requests"] = 7
    changed = tmp_path / "serve.yaml"
    changed.write_text(yaml.safe_dump(source), encoding="utf-8")
    assert km.stale(serve_yaml=changed) == ["rayservice.yaml"]


# --- the Serve config ----------------------------------------------------------------------------

def dropped_keys(config: dict[str, Any]) -> list[str]:
    """Paths of `config` that ServeDeploySchema does not give back as they were (unknown keys,
    which it drops silently, and values it changed)."""
    dumped = ServeDeploySchema.model_validate(config).model_dump(exclude_unset=True)
    return list(_differences(config, dumped, ""))


def _differences(given: Any, dumped: Any, path: str) -> Iterator[str]:
    if isinstance(given, dict) and isinstance(dumped, dict):
        for key, value in given.items():
            if key not in dumped:
                yield f"{path}.{key}"
            else:
                yield from _differences(value, dumped[key], f"{path}.{key}")
    elif isinstance(given, list) and isinstance(dumped, list) and len(given) == len(dumped):
        for i, (a, b) in enumerate(zip(given, dumped)):
            yield from _differences(a, b, f"{path}[{i}]")
    elif given != dumped:
        yield path


def test_serve_config_v2_passes_serve_deploy_schema_without_dropped_keys() -> None:
    config = serve_config_of(by_kind("RayService"))
    assert dropped_keys(config) == []
    assert config["http_options"]["host"] == "0.0.0.0"
    assert config["proxy_location"] == "EveryNode"
    routes = [app["route_prefix"] for app in config["applications"]]
    assert all(route.startswith("/") for route in routes), routes
    assert len(set(routes)) == len(routes)
    for app in config["applications"]:
        if deploy.is_panel(app):  # no session affinity without HAProxy: one replica per panel
            assert all(d["num_replicas"] == 1 and "autoscaling_config" not in d for d in app["deployments"])
        elif app["name"] == "api":  # past the laptop's cap of configs/serve.yaml: one replica a worker pod
            [api] = app["deployments"]
            assert api["autoscaling_config"]["max_replicas"] == km.SERVE_MAX_WORKERS > 1


def test_an_unknown_serve_key_is_caught_although_the_schema_drops_it() -> None:
    config = serve_config_of(by_kind("RayService"))
    config["applications"][0]["deployments"][0]["max_ongoing_request"] = 5
    config["http_options"]["hots"] = "0.0.0.0"
    ServeDeploySchema.model_validate(config)  # Serve itself says nothing...
    assert sorted(dropped_keys(config)) == [  # ...the comparison does
        ".applications[0].deployments[0].max_ongoing_request", ".http_options.hots"]


def test_a_route_without_a_slash_is_refused(tmp_path: Path) -> None:
    source = yaml.safe_load((REPO / "configs" / "serve.yaml").read_text(encoding="utf-8"))
    source["applications"][0]["route_prefix"] = "api"
    bad = tmp_path / "serve.yaml"
    bad.write_text(yaml.safe_dump(source), encoding="utf-8")
    with pytest.raises(km.ManifestError, match="route_prefix"):
        km.in_cluster_serve_config(bad)


# --- core resources ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,doc", CORE_DOCS, ids=[name for name, _ in CORE_DOCS])
def test_core_resources_are_valid_kubernetes(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_core_resources_are_all_there() -> None:
    kinds = sorted({doc["kind"] for _, doc in CORE_DOCS})
    assert kinds == ["ConfigMap", "Job", "Secret", "Service", "StatefulSet"]
    names = {doc["metadata"]["name"] for _, doc in CORE_DOCS if doc["kind"] == "Service"}
    assert {"augment-postgres", "augment-redis", "augment-minio"} <= names
    assert km.REDIS_ADDRESS.split(":")[0] in names


def test_a_misspelt_core_field_fails() -> None:
    statefulset = copy.deepcopy(next(doc for _, doc in CORE_DOCS if doc["kind"] == "StatefulSet"))
    statefulset["spec"]["replica"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, KUBERNETES_VERSION, strict=True)


# --- settings and secrets ------------------------------------------------------------------------

def walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def test_secrets_reach_pods_only_by_secret_key_ref() -> None:
    secret = example_secret()
    keys = set(secret["stringData"])
    referenced = set()
    for name, doc in DOCS:
        if doc["kind"] == "Secret":
            continue
        for key, value in walk(doc):
            assert key != "secretRef", f"{name}: envFrom a Secret hands over every key; use secretKeyRef"
            assert not (key == "secret" and isinstance(value, dict)), f"{name}: a Secret mounted as files"
            if key == "secretKeyRef":
                assert value["name"] == km.SECRET_NAME, name
                referenced.add(value["key"])
            if key == "env":
                for var in value:
                    if var["name"] in km.SECRET_ENV or "PASSWORD" in var["name"] or var["name"].endswith("_KEY"):
                        assert "value" not in var, f"{name}: {var['name']} must come from the Secret"
    assert referenced == keys, "the example Secret's keys and the keys the pods read differ"


def test_the_example_secret_holds_no_secret_and_is_not_applied_with_the_rest() -> None:
    secret = example_secret()
    assert "data" not in secret
    assert all(value == "" for value in secret["stringData"].values())
    paths = [p for p in manifest_files() if "kind: Secret" in p.read_text(encoding="utf-8")]
    assert [p.parent.name for p in paths] == ["example-secret"]  # not picked up by kubectl apply -f cluster/kuberay/


def test_every_ray_container_gets_the_settings_and_the_secrets() -> None:
    for name, doc in RAY_DOCS:
        for key, value in walk(doc):
            if key == "containers":
                for container in value:
                    assert container["envFrom"] == [{"configMapRef": {"name": km.SETTINGS_CONFIGMAP}}], name
                    assert {v["name"] for v in container["env"]} == set(km.SECRET_ENV), name


def test_the_configmap_carries_real_settings_that_load() -> None:
    configmap = by_kind("ConfigMap")
    assert configmap["metadata"]["name"] == km.SETTINGS_CONFIGMAP
    data = configmap["data"]
    fields = {f"AUGMENT_{name.upper()}" for name in Settings.model_fields}
    augment_keys = {k for k in data if k.startswith("AUGMENT_")}
    assert augment_keys - fields == set(), "not settings (misspelt?)"
    assert REQUIRED_IN_CLUSTER <= augment_keys
    secret_settings = {k for k in km.SECRET_ENV if k.startswith("AUGMENT_")}
    assert not (augment_keys & (secret_settings | UNSET_SETTINGS))
    assert (secret_settings | UNSET_SETTINGS) <= fields
    env = {**data, "AUGMENT_DATABASE_URL": "postgresql+psycopg://augment:x@augment-postgres:5432/augment",
           "AUGMENT_REDIS_URL": "redis://:x@augment-redis:6379/0"}
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("AUGMENT_")]:
            mp.delenv(key)
        for key, value in env.items():
            mp.setenv(key, value)
        settings = Settings()
    assert settings.storage_root == "s3://augment/data"
    assert settings.cache_backend == "redis"
    assert "augment.example.com" in settings.host_names


def test_the_bucket_job_makes_the_storage_roots_bucket() -> None:
    bucket = by_kind("ConfigMap")["data"]["AUGMENT_STORAGE_ROOT"].removeprefix("s3://").split("/")[0]
    job = by_kind("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert f"mc mb --ignore-existing augment/{bucket}" in container["args"][0]
