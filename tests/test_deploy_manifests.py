"""Static checks for the deployment artefacts: k8s/ (kustomize base) and Containerfile.

Fast and offline: the manifests are validated against the Kubernetes OpenAPI
schemas bundled with kubernetes-validate, then checked for the properties the
service relies on (least-privilege RBAC, restricted security context, probes on
the health server, image entrypoint).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "k8s"
CONTAINERFILE = ROOT / "Containerfile"

# The oldest Kubernetes minor the manifests must work on and a recent one.
# (kubernetes-validate >= 1.31 is a dev dependency; newer schemas are checked when installed.)
K8S_VERSIONS = ("1.31.0", "1.34.0")

NAME = "jobscheduler"
IMAGE = "ghcr.io/jobscheduler/jobscheduler:latest"
UID = 10001
GRPC_PORT = 50054
HTTP_PORT = 8080

# (apiGroup, resource) -> verbs: exactly the Kubernetes API calls the service makes.
EXPECTED_RBAC = {
    ("batch", "jobs"): {"create", "get", "list", "watch", "patch"},
    ("", "pods"): {"get", "list", "watch"},
    ("", "pods/log"): {"get"},
}

Doc = dict[str, Any]


def _load_kustomization() -> Doc:
    kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())
    assert isinstance(kustomization, dict)
    return kustomization


def _load_docs() -> list[Doc]:
    docs: list[Doc] = []
    for resource in _load_kustomization()["resources"]:
        path = K8S_DIR / resource
        assert path.is_file(), f"kustomization resource {resource} is not a file in k8s/"
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert isinstance(doc, dict), f"{resource}: not a mapping"
            docs.append(doc)
    return docs


DOCS = _load_docs()


def _doc_id(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def _one(kind: str, name: str = NAME) -> Doc:
    found = [d for d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def _container() -> Doc:
    containers = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: Doc = containers[0]
    return container


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_manifest_is_valid_kubernetes(doc: Doc, version: str) -> None:
    if kv_utils.major_minor(version) not in {kv_utils.major_minor(v) for v in kv_utils.all_versions()}:
        pytest.skip(f"installed kubernetes-validate has no {version} schemas")
    kubernetes_validate.validate(doc, version, strict=True)


def test_expected_resources_present() -> None:
    kinds = sorted(_doc_id(d) for d in DOCS)
    assert kinds == sorted(
        f"{kind}/{NAME}"
        for kind in ("ServiceAccount", "Role", "RoleBinding", "ConfigMap", "Deployment", "Service")
    )


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_standard_labels(doc: Doc) -> None:
    labels = doc["metadata"].get("labels", {})
    assert labels.get("app.kubernetes.io/name") == NAME
    assert labels.get("app.kubernetes.io/instance") == NAME
    assert labels.get("app.kubernetes.io/part-of") == NAME


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_builds() -> None:
    """`kubectl apply -k k8s/` renders the same objects (kustomize runs offline)."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    rendered = sorted(_doc_id(d) for d in yaml.safe_load_all(out) if d)
    assert rendered == sorted(_doc_id(d) for d in DOCS)


# --------------------------------------------------------------------------- RBAC


def test_role_has_no_wildcards() -> None:
    for rule in _one("Role")["rules"]:
        assert "nonResourceURLs" not in rule
        assert "resourceNames" not in rule
        for key in ("apiGroups", "resources", "verbs"):
            assert rule[key], f"empty {key} in {rule}"
            assert not any("*" in value for value in rule[key]), f"wildcard in {key}: {rule}"


def test_role_grants_exactly_the_needed_verbs() -> None:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in _one("Role")["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == EXPECTED_RBAC


def test_no_cluster_wide_rbac() -> None:
    assert not [d for d in DOCS if d["kind"] in {"ClusterRole", "ClusterRoleBinding"}]


def test_rolebinding_binds_role_to_service_account() -> None:
    binding = _one("RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME}
    assert [(s["kind"], s["name"]) for s in binding["subjects"]] == [("ServiceAccount", NAME)]
    _one("ServiceAccount")
    pod_spec = _one("Deployment")["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == NAME
    assert pod_spec.get("automountServiceAccountToken", True) is True


# --------------------------------------------------------------------------- Deployment


def test_deployment_basics() -> None:
    deployment = _one("Deployment")
    spec = deployment["spec"]
    pod_spec = spec["template"]["spec"]
    assert spec["replicas"] == 1
    assert pod_spec["terminationGracePeriodSeconds"] == 30
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()

    container = _container()
    assert container["image"] == IMAGE
    assert container["args"] == ["serve"]
    assert "command" not in container, "the image ENTRYPOINT is `jobscheduler`"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": GRPC_PORT, "http": HTTP_PORT}
    resources = container["resources"]
    for section in ("requests", "limits"):
        assert set(resources[section]) == {"cpu", "memory"}


def test_deployment_environment() -> None:
    container = _container()
    env = {e["name"]: e for e in container["env"]}
    assert env["K8S_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["IN_CLUSTER"]["value"] == "true"
    assert container["envFrom"] == [{"configMapRef": {"name": NAME}}]

    config = _one("ConfigMap")["data"]
    assert config["GRPC_PORT"] == str(GRPC_PORT)
    assert config["HEALTH_PORT"] == str(HTTP_PORT)
    assert config["TIMER_IMAGE"] == IMAGE
    for key in (
        "LOG_LEVEL",
        "DEFAULT_CPU_REQUEST",
        "DEFAULT_MEMORY_REQUEST",
        "DEFAULT_CPU_LIMIT",
        "DEFAULT_MEMORY_LIMIT",
    ):
        assert key in config
    assert not set(config) & set(env), "ConfigMap keys shadowed by explicit env"
    assert "K8S_NAMESPACE" not in config


def test_container_security_context_is_restricted() -> None:
    pod_spec = _one("Deployment")["spec"]["template"]["spec"]
    assert not pod_spec.get("hostNetwork") and not pod_spec.get("hostPID") and not pod_spec.get("hostIPC")
    sc = _container()["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == UID
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged", False) is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    seccomp = sc.get("seccompProfile") or pod_spec["securityContext"]["seccompProfile"]
    assert seccomp == {"type": "RuntimeDefault"}
    assert pod_spec["securityContext"]["runAsNonRoot"] is True


def test_tmp_is_a_writable_empty_dir() -> None:
    pod_spec = _one("Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in _container()["volumeMounts"]}
    assert "/tmp" in mounts
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def _probe_target(probe: Doc) -> tuple[str, int]:
    http_get = probe["httpGet"]
    port = http_get["port"]
    if isinstance(port, str):
        named = {p["name"]: p["containerPort"] for p in _container()["ports"]}
        port = named[port]
    return http_get["path"], port


@pytest.mark.parametrize(
    ("probe", "path"),
    [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")],
)
def test_probes_hit_the_health_server(probe: str, path: str) -> None:
    assert _probe_target(_container()[probe]) == (path, HTTP_PORT)


# --------------------------------------------------------------------------- Service


def test_service_ports_and_selector() -> None:
    service = _one("Service")
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {"grpc": (GRPC_PORT, "grpc"), "http": (HTTP_PORT, "http")}
    pod_labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


# --------------------------------------------------------------------------- Containerfile


def _containerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", CONTAINERFILE.read_text())
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        out.append((instruction.upper(), args.strip()))
    return out


def _final_stage() -> list[tuple[str, str]]:
    instructions = _containerfile_instructions()
    last_from = max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    return instructions[last_from:]


def test_containerfile_runs_as_numeric_non_root_user() -> None:
    users = [args for ins, args in _final_stage() if ins == "USER"]
    assert users, "final stage has no USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) != 0, f"USER must be a numeric non-root UID, got {users[-1]!r}"
    assert not group or (group.isdigit() and int(group) != 0)
    assert int(user) == UID == _container()["securityContext"]["runAsUser"]


def test_containerfile_entrypoint_and_cmd() -> None:
    stage = _final_stage()
    entrypoints = [json.loads(args) for ins, args in stage if ins == "ENTRYPOINT"]
    cmds = [json.loads(args) for ins, args in stage if ins == "CMD"]
    assert entrypoints[-1:] == [["jobscheduler"]]
    assert cmds[-1:] == [["serve"]]


def test_containerfile_base_image_and_metadata() -> None:
    instructions = _containerfile_instructions()
    text = CONTAINERFILE.read_text()
    assert "python:3.11-slim" in text
    assert len([1 for ins, _ in instructions if ins == "FROM"]) >= 2, "multi-stage build expected"
    stage_text = " ".join(f"{ins} {args}" for ins, args in _final_stage())
    for arg, env in (
        ("VERSION", "JOBSCHEDULER_VERSION"),
        ("GIT_COMMIT", "JOBSCHEDULER_GIT_COMMIT"),
        ("BUILD_DATE", "JOBSCHEDULER_BUILD_DATE"),
    ):
        assert re.search(rf"\bARG {arg}\b", stage_text), arg
        assert re.search(rf"\b{env}=\$\{{?{arg}\b", stage_text), env
    for label in ("version", "revision", "created", "title", "source"):
        assert f"org.opencontainers.image.{label}=" in stage_text
    assert "PYTHONDONTWRITEBYTECODE=1" in stage_text
    exposed = {p for ins, args in _final_stage() if ins == "EXPOSE" for p in args.split()}
    assert exposed == {str(GRPC_PORT), str(HTTP_PORT)}
