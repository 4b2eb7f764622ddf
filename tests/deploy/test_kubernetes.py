"""Kubernetes manifests: schema-valid for a pinned Kubernetes version (offline, with the
`kubernetes-validate` package), consistent with each other, and the policy they ship loads."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from gateway.policy import parse_policy
from tests.deploy.promql import REPO
from tests.deploy.support import require

K8S = REPO / "deploy" / "kubernetes"
K8S_VERSION = "1.32.0"
NAMESPACE = "model-gateway"


@pytest.fixture(scope="module")
def validator() -> ModuleType:
    try:
        return importlib.import_module("kubernetes_validate")
    except ImportError:
        require("the kubernetes-validate package", "pip install kubernetes-validate")


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def resources() -> list[dict[str, Any]]:
    """Every object `kubectl apply -k` would create, before kustomize's own edits."""
    out = [d for name in kustomization()["resources"] for d in documents(K8S / name)]
    return out + generated_config_maps()


def generated_config_maps() -> list[dict[str, Any]]:
    """The ConfigMaps of `configMapGenerator`, as kustomize builds them (without the hash)."""
    out = []
    for spec in kustomization().get("configMapGenerator", []):
        data = {Path(f).name: (K8S / f).read_text() for f in spec.get("files", [])}
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": spec["name"], "namespace": NAMESPACE},
                "data": data,
            }
        )
    return out


def find(kind: str, name: str) -> dict[str, Any]:
    for doc in resources():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name}")


MANIFESTS = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_is_schema_valid(validator: ModuleType, name: str) -> None:
    docs = documents(K8S / name)
    assert docs
    for doc in docs:
        try:
            validator.validate(doc, K8S_VERSION, strict=True)
        except validator.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_generated_config_map_is_schema_valid(validator: ModuleType) -> None:
    (config_map,) = generated_config_maps()
    validator.validate(config_map, K8S_VERSION, strict=True)


def test_an_invalid_manifest_is_caught(validator: ModuleType) -> None:
    broken = documents(K8S / "gateway.yaml")[0]
    broken["spec"]["replicas"] = "two"
    with pytest.raises(validator.ValidationError):
        validator.validate(broken, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    assert kustomization()["namespace"] == NAMESPACE
    # The example Secret is documentation: real keys are created with kubectl.
    assert listed == set(MANIFESTS) - {"secret.example.yaml"}
    for spec in kustomization()["configMapGenerator"]:
        for file in spec["files"]:
            assert not file.startswith(("/", "..")), "kustomize cannot load files outside its root"
            assert (K8S / file).is_file()


def test_policy_copy_matches_the_example_and_loads() -> None:
    (config_map,) = generated_config_maps()
    ((name, text),) = config_map["data"].items()
    assert text == (REPO / "policies" / "examples" / name).read_text(), (
        f"deploy/kubernetes/policies/{name} drifted from policies/examples/{name}"
    )
    env = {e["name"]: e["value"] for e in _gateway_container()["env"] if "value" in e}
    loaded = parse_policy(text, f"configmap:{name}", env)
    open_tier = [b for b in loaded.policy.backends.values() if b.tier == "open"]
    assert any(b.base_url == "http://vllm:8000/v1" for b in open_tier)


def _gateway_container() -> dict[str, Any]:
    (container,) = find("Deployment", "gateway")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def test_gateway_deployment() -> None:
    deployment = find("Deployment", "gateway")
    pod = deployment["spec"]["template"]
    container = _gateway_container()
    assert deployment["spec"]["replicas"] == 2
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(annotations["prometheus.io/port"]) == ports["http"] == 8000


def test_gateway_secrets_are_optional_refs() -> None:
    env = {e["name"]: e for e in _gateway_container()["env"]}
    for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY"):
        ref = env[key]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == key and ref["optional"] is True
        assert "value" not in env[key], f"{key} must never be written in the manifest"


def test_gateway_policy_mount() -> None:
    container = _gateway_container()
    env = {e["name"]: e.get("value") for e in container["env"]}
    volumes = {
        v["name"]: v for v in find("Deployment", "gateway")["spec"]["template"]["spec"]["volumes"]
    }
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/gateway/policies"]
    assert mount["readOnly"] is True
    config_map = volumes[mount["name"]]["configMap"]["name"]
    (generated,) = generated_config_maps()
    assert config_map == generated["metadata"]["name"]
    policy_file = Path(env["GATEWAY_POLICY"])
    assert str(policy_file.parent) == mount["mountPath"]
    assert policy_file.name in generated["data"]


def test_gateway_reaches_redis_and_vllm_services() -> None:
    env = {e["name"]: e.get("value") for e in _gateway_container()["env"]}
    redis = find("Service", "redis")
    assert env["GATEWAY_REDIS_URL"] == f"redis://redis:{redis['spec']['ports'][0]['port']}/0"
    vllm = find("Service", "vllm")
    assert env["VLLM_BASE_URL"] == f"http://vllm:{vllm['spec']['ports'][0]['port']}/v1"


def test_services_select_their_pods() -> None:
    deployments = {d["metadata"]["name"]: d for d in resources() if d["kind"] == "Deployment"}
    for service in (d for d in resources() if d["kind"] == "Service"):
        name = service["metadata"]["name"]
        pod = deployments[name]["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items(), name
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{name}: no container port {port['targetPort']}"
        matched = deployments[name]["spec"]["selector"]["matchLabels"]
        assert matched.items() <= labels.items(), name


def test_disruption_budget_and_autoscaler() -> None:
    pod_labels = find("Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    pdb = find("PodDisruptionBudget", "gateway")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["minAvailable"] < find("Deployment", "gateway")["spec"]["replicas"]
    hpa = find("HorizontalPodAutoscaler", "gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


def test_vllm_gets_a_gpu() -> None:
    (container,) = find("Deployment", "vllm")["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("vllm/vllm-openai:")
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    served = container["args"][container["args"].index("--served-model-name") + 1 :]
    policy = yaml.safe_load((K8S / "policies" / "tiered.yaml").read_text())
    models = {b["model"] for b in policy["backends"].values() if b.get("tier") == "open"}
    assert models <= set(served), "vLLM must serve the model names the policy asks for"
