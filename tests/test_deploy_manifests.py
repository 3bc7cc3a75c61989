"""Checks of the deployment artefacts: k8s/ (a kustomize base and its TLS overlay), Taskfile's k8s
tasks and the Containerfile.

The manifests are built the way `kubectl apply -k` builds them (a small kustomize equivalent:
resources, namespace, strategic-merge patches; kubectl is not needed), validated against the
Kubernetes OpenAPI schemas bundled with kubernetes-validate, and checked for what the deployment
relies on: Pod Security "restricted", least-privilege RBAC, probes on the health server, a
NetworkPolicy and a PodDisruptionBudget that select the server pods, exactly the token in-cluster
configuration needs.

The RBAC rules are not compared with a hand-written list: the real service runs against the
Kubernetes API emulator, serves every RPC, and the requests the emulator received are mapped to
(API group, resource, verb) the way the API server authorizes them. The Role and ClusterRole must
grant exactly that set.
"""

from __future__ import annotations

import copy
import json
import posixpath
import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from conftest import kubernetes_service, write_kubeconfig
from emulator import EmulatorThread
from kubernetes.aio.config import incluster_config
from kubernetes_validate import utils as kv_utils
from packaging.version import Version
from pod_security import check_object

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.backends.kubernetes._client import IN_CLUSTER_TOKEN
from jobscheduler.config import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S_DIR = ROOT / "k8s"
TLS_DIR = K8S_DIR / "tls"
CONTAINERFILE = ROOT / "Containerfile"
TASKFILE = ROOT / "Taskfile.yml"

# The oldest Kubernetes minor the manifests must work on and a recent one.
# (kubernetes-validate >= 1.31 is a dev dependency; newer schemas are checked when installed.)
K8S_VERSIONS = ("1.31.0", "1.34.0")

NAME = "jobscheduler"
NAMESPACE = "jobscheduler"
TOKENREVIEW = "jobscheduler-tokenreview"
IMAGE_REPOSITORY = "ghcr.io/jobscheduler/jobscheduler"
#: The release k8s/base/kustomization.yaml pins (`images:`); tests/test_release.py checks it.
RELEASE_TAG = yaml.safe_load((K8S_DIR / "base" / "kustomization.yaml").read_text())["images"][0]["newTag"]
IMAGE = f"{IMAGE_REPOSITORY}:{RELEASE_TAG}"
UID = 10001
GRPC_PORT = 50054
HTTP_PORT = 8080
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TLS_MOUNT = "/etc/jobscheduler/tls"
TOKENREVIEWS_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"

Doc = dict[str, Any]

# --------------------------------------------------------------------------- a small kustomize

#: Kinds without a namespace (kustomize's namespace transformer leaves them alone).
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "CustomResourceDefinition",
        "IngressClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }
)
#: Strategic merge: the lists merged item by item, and their merge keys (from the Kubernetes
#: OpenAPI x-kubernetes-patch-merge-key). A patch that touches another list fails the build.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "env": "name",
}
KNOWN_KUSTOMIZATION_FIELDS = frozenset({"apiVersion", "kind", "namespace", "resources", "patches", "images"})


def _doc_id(doc: Doc) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


def _load_yaml(path: Path) -> list[Doc]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for doc in docs:
        assert isinstance(doc, dict), f"{path}: not a mapping"
    return docs


def strategic_merge(base: Any, patch: Any, where: str = "") -> Any:
    """The strategic-merge patch of ``base`` by ``patch`` for the lists in MERGE_KEYS."""
    if isinstance(patch, dict) and isinstance(base, dict):
        out = dict(base)
        for key, value in patch.items():
            assert not key.startswith("$"), f"{where}.{key}: patch directives are not supported here"
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, f"{where}.{key}")
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(patch, list):
        field = where.rsplit(".", 1)[-1]
        assert field in MERGE_KEYS, f"{where}: the test's strategic merge does not know this list"
        key = MERGE_KEYS[field]
        merged = [copy.deepcopy(item) for item in base or ()]
        added = []
        for item in patch:
            at = [i for i, old in enumerate(merged) if old.get(key) == item[key]]
            if at:
                merged[at[0]] = strategic_merge(merged[at[0]], item, f"{where}[{item[key]}]")
            else:
                added.append(copy.deepcopy(item))
        return added + merged  # kustomize puts the new items first
    return copy.deepcopy(patch)


def kustomize_build(directory: Path) -> list[Doc]:
    """What `kubectl kustomize <directory>` renders, for the features k8s/ uses."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert isinstance(kustomization, dict)
    unknown = set(kustomization) - KNOWN_KUSTOMIZATION_FIELDS
    assert not unknown, f"{directory}: the test's kustomize does not support {sorted(unknown)}"
    docs: list[Doc] = []
    for resource in kustomization.get("resources", ()):
        path = (directory / resource).resolve()
        if path.is_dir():
            docs.extend(kustomize_build(path))
        else:
            assert path.is_file(), f"{directory}: resource {resource} does not exist"
            docs.extend(_load_yaml(path))
    for entry in kustomization.get("patches", ()):
        assert set(entry) == {"path"}, f"{directory}: only `patches: [{{path: ...}}]` is supported"
        for patch in _load_yaml(directory / entry["path"]):
            targets = [i for i, d in enumerate(docs) if _doc_id(d) == _doc_id(patch)]
            assert len(targets) == 1, f"{entry['path']}: patch target {_doc_id(patch)} not found once"
            docs[targets[0]] = strategic_merge(docs[targets[0]], patch, _doc_id(patch))
    for image in kustomization.get("images", ()):
        _set_image(docs, image)
    namespace = kustomization.get("namespace")
    if namespace:
        _set_namespace(docs, namespace)
    return docs


def _set_image(docs: list[Doc], image: Mapping[str, str]) -> None:
    """kustomize's images transformer (name, newName, newTag, digest) on the pod templates."""
    assert set(image) <= {"name", "newName", "newTag", "digest"}, image
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in [*pod.get("initContainers", ()), *pod.get("containers", ())]:
            name = re.split(r"[@]|:(?=[^/]*$)", container["image"])[0]
            if name != image["name"]:
                continue
            new = image.get("newName", name)
            if "digest" in image:
                container["image"] = f"{new}@{image['digest']}"
            elif "newTag" in image:
                container["image"] = f"{new}:{image['newTag']}"
            else:
                container["image"] = new + container["image"][len(name) :]


def _set_namespace(docs: list[Doc], namespace: str) -> None:
    """kustomize's namespace transformer: metadata.namespace of the namespaced objects, and the
    ServiceAccount subjects of bindings that refer to one of the ServiceAccounts being moved."""
    moved = {
        (d["metadata"]["name"], d["metadata"].get("namespace", "default"))
        for d in docs
        if d["kind"] == "ServiceAccount"
    }
    for doc in docs:
        if doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = namespace
        if doc["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            for subject in doc.get("subjects", ()):
                if subject.get("kind") == "ServiceAccount" and (
                    (subject["name"], subject.get("namespace", "default")) in moved
                    or subject["name"] == "default"
                ):
                    subject["namespace"] = namespace


BUILDS: dict[str, list[Doc]] = {"base": kustomize_build(K8S_DIR), "tls": kustomize_build(TLS_DIR)}
DOCS = BUILDS["base"]
ALL_DOCS = [(build, doc) for build, docs in BUILDS.items() for doc in docs]


def _all_doc_id(item: tuple[str, Doc]) -> str:
    return f"{item[0]}:{_doc_id(item[1])}"


def _one(kind: str, name: str = NAME, build: str = "base") -> Doc:
    found = [d for d in BUILDS[build] if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name} in {build}, found {len(found)}"
    return found[0]


def _pod_spec(build: str = "base") -> Doc:
    spec: Doc = _one("Deployment", build=build)["spec"]["template"]["spec"]
    return spec


def _container(build: str = "base") -> Doc:
    containers = _pod_spec(build)["containers"]
    assert len(containers) == 1
    container: Doc = containers[0]
    return container


def _pod_labels() -> dict[str, str]:
    labels: dict[str, str] = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) selects ``labels``."""
    if not selector:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def test_the_test_kustomize_merges_like_kustomize() -> None:
    base = {"spec": {"containers": [{"name": "a", "env": [{"name": "X", "value": "1"}]}], "volumes": []}}
    patch = {
        "spec": {
            "containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": "3"}]}],
            "volumes": [{"name": "v", "emptyDir": {}}],
        }
    }
    assert strategic_merge(base, patch) == {
        "spec": {
            "containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}, {"name": "X", "value": "3"}]}],
            "volumes": [{"name": "v", "emptyDir": {}}],
        }
    }
    with pytest.raises(AssertionError, match="does not know this list"):
        strategic_merge({"args": ["a"]}, {"args": ["b"]}, "container")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("build", sorted(BUILDS))
def test_kustomize_builds_the_same(build: str) -> None:
    """`kubectl kustomize` renders the objects the test builds (kustomize runs offline)."""
    directory = {"base": K8S_DIR, "tls": TLS_DIR}[build]
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    rendered = {_doc_id(d): d for d in yaml.safe_load_all(out) if d}
    ours = {_doc_id(d): d for d in BUILDS[build]}
    assert sorted(rendered) == sorted(ours)
    for key, doc in ours.items():
        assert rendered[key]["metadata"].get("namespace") == doc["metadata"].get("namespace"), key
        assert rendered[key].get("subjects") == doc.get("subjects"), key
    assert rendered["ConfigMap/jobscheduler"]["data"] == ours["ConfigMap/jobscheduler"]["data"]
    assert rendered["Deployment/jobscheduler"]["spec"] == ours["Deployment/jobscheduler"]["spec"]


# --------------------------------------------------------------------------- schema, names, labels


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("item", ALL_DOCS, ids=_all_doc_id)
def test_manifest_is_valid_kubernetes(item: tuple[str, Doc], version: str) -> None:
    if kv_utils.major_minor(version) not in {kv_utils.major_minor(v) for v in kv_utils.all_versions()}:
        pytest.skip(f"installed kubernetes-validate has no {version} schemas")
    kubernetes_validate.validate(item[1], version, strict=True)


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_expected_resources_present(build: str) -> None:
    kinds = sorted(_doc_id(d) for d in BUILDS[build])
    assert kinds == sorted(
        [
            f"Namespace/{NAMESPACE}",
            f"ClusterRole/{TOKENREVIEW}",
            f"ClusterRoleBinding/{TOKENREVIEW}",
            *(
                f"{kind}/{NAME}"
                for kind in (
                    "ServiceAccount",
                    "Role",
                    "RoleBinding",
                    "ConfigMap",
                    "Deployment",
                    "Service",
                    "PodDisruptionBudget",
                    "NetworkPolicy",
                )
            ),
        ]
    )


@pytest.mark.parametrize("item", ALL_DOCS, ids=_all_doc_id)
def test_standard_labels(item: tuple[str, Doc]) -> None:
    labels = item[1]["metadata"].get("labels", {})
    assert labels.get("app.kubernetes.io/name") == NAME
    assert labels.get("app.kubernetes.io/instance") == NAME
    assert labels.get("app.kubernetes.io/part-of") == NAME


@pytest.mark.parametrize("item", ALL_DOCS, ids=_all_doc_id)
def test_everything_namespaced_is_in_the_namespace(item: tuple[str, Doc]) -> None:
    doc = item[1]
    if doc["kind"] in CLUSTER_SCOPED:
        assert "namespace" not in doc["metadata"]
    else:
        assert doc["metadata"]["namespace"] == NAMESPACE


def test_namespace_enforces_pod_security_restricted() -> None:
    kustomization = yaml.safe_load((K8S_DIR / "base" / "kustomization.yaml").read_text())
    assert kustomization["namespace"] == NAMESPACE
    labels = _one("Namespace", NAMESPACE)["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert labels.get(f"pod-security.kubernetes.io/{mode}-version", "latest") == "latest"


# --------------------------------------------------------------------------- RBAC, statically

Access = tuple[str, str, str, str]  # (scope: "namespaced" | "cluster", apiGroup, resource, verb)


def _rules_of(doc: Doc) -> set[Access]:
    scope = "namespaced" if doc["kind"] == "Role" else "cluster"
    return {
        (scope, group, resource, verb)
        for rule in doc["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def granted(docs: list[Doc]) -> set[Access]:
    """What the Role (in the service's namespace) and the ClusterRole (cluster-wide) grant."""
    return {access for d in docs if d["kind"] in ("Role", "ClusterRole") for access in _rules_of(d)}


@pytest.mark.parametrize(("kind", "name"), [("Role", NAME), ("ClusterRole", TOKENREVIEW)])
def test_rbac_has_no_wildcards(kind: str, name: str) -> None:
    for rule in _one(kind, name)["rules"]:
        assert "nonResourceURLs" not in rule
        assert "resourceNames" not in rule
        for key in ("apiGroups", "resources", "verbs"):
            assert rule[key], f"empty {key} in {rule}"
            assert not any("*" in value for value in rule[key]), f"wildcard in {key}: {rule}"
    assert "aggregationRule" not in _one(kind, name)


def test_cluster_role_only_reviews_tokens() -> None:
    assert _rules_of(_one("ClusterRole", TOKENREVIEW)) == {
        ("cluster", "authentication.k8s.io", "tokenreviews", "create")
    }


def test_leases_only_in_the_namespace_and_never_deleted() -> None:
    """Leader election takes, renews and hands over the Lease in the service's own namespace."""
    leases = {a for a in granted(DOCS) if a[1] == "coordination.k8s.io" or a[2] == "leases"}
    assert leases == {("namespaced", "coordination.k8s.io", "leases", v) for v in ("get", "create", "update")}


@pytest.mark.parametrize(
    ("binding", "role_kind", "role_name"),
    [("RoleBinding", "Role", NAME), ("ClusterRoleBinding", "ClusterRole", TOKENREVIEW)],
)
def test_bindings_bind_the_service_account(binding: str, role_kind: str, role_name: str) -> None:
    for build in BUILDS:
        doc = _one(binding, role_name, build)
        assert doc["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": role_kind,
            "name": role_name,
        }
        assert doc["subjects"] == [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
        sa = _one("ServiceAccount", build=build)
        assert sa["metadata"]["namespace"] == NAMESPACE
        assert _pod_spec(build)["serviceAccountName"] == NAME


def test_no_token_is_mounted_automatically() -> None:
    assert _one("ServiceAccount")["automountServiceAccountToken"] is False
    assert _pod_spec()["automountServiceAccountToken"] is False


# --------------------------------------------------------------------------- RBAC, from the code


def api_access(method: str, path: str, query: str = "") -> Access:
    """The (scope, apiGroup, resource, verb) the API server authorizes a request as
    (k8s.io/apiserver RequestInfoFactory). Non-resource URLs give ("nonResource", "", path, verb)."""
    params = urllib.parse.parse_qs(query)
    parts = [p for p in path.split("/") if p]
    verb = {
        "POST": "create",
        "GET": "get",
        "HEAD": "get",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete",
    }[method.upper()]
    if not parts or parts[0] not in ("api", "apis") or len(parts) < (3 if parts[0] == "api" else 4):
        return ("nonResource", "", path, method.lower())
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    if rest[0] == "watch":  # the deprecated /watch/ paths
        verb, rest = "watch", rest[1:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in ("status", "finalize"):
            rest = rest[2:]
    resource, name, subresource = [*rest, "", ""][:3]
    if not name and verb == "get":
        verb = "list"
    if verb in ("get", "list") and params.get("watch", [""])[0] in ("true", "1"):
        verb = "watch"
    if not name and verb == "delete":
        verb = "deletecollection"
    if subresource:
        resource = f"{resource}/{subresource}"
    return ("namespaced" if namespace else "cluster", group, resource, verb)


@pytest.mark.parametrize(
    ("method", "path", "query", "access"),
    [
        ("POST", "/apis/batch/v1/namespaces/ns/jobs", "", ("namespaced", "batch", "jobs", "create")),
        ("GET", "/apis/batch/v1/namespaces/ns/jobs", "limit=500", ("namespaced", "batch", "jobs", "list")),
        ("GET", "/apis/batch/v1/namespaces/ns/jobs", "watch=true", ("namespaced", "batch", "jobs", "watch")),
        ("GET", "/apis/batch/v1/watch/namespaces/ns/jobs", "", ("namespaced", "batch", "jobs", "watch")),
        ("GET", "/apis/batch/v1/namespaces/ns/jobs/job-1", "", ("namespaced", "batch", "jobs", "get")),
        ("PATCH", "/apis/batch/v1/namespaces/ns/jobs/job-1", "", ("namespaced", "batch", "jobs", "patch")),
        (
            "PUT",
            "/apis/batch/v1/namespaces/ns/jobs/job-1/status",
            "",
            ("namespaced", "batch", "jobs/status", "update"),
        ),
        ("DELETE", "/apis/batch/v1/namespaces/ns/jobs/job-1", "", ("namespaced", "batch", "jobs", "delete")),
        (
            "DELETE",
            "/apis/batch/v1/namespaces/ns/jobs",
            "",
            ("namespaced", "batch", "jobs", "deletecollection"),
        ),
        ("GET", "/api/v1/namespaces/ns/pods", "watch=1", ("namespaced", "", "pods", "watch")),
        ("GET", "/api/v1/namespaces/ns/pods/p/log", "follow=true", ("namespaced", "", "pods/log", "get")),
        ("GET", "/api/v1/pods", "", ("cluster", "", "pods", "list")),
        ("GET", "/api/v1/namespaces/ns", "", ("namespaced", "", "namespaces", "get")),
        ("PUT", "/api/v1/namespaces/ns/finalize", "", ("namespaced", "", "namespaces/finalize", "update")),
        ("POST", TOKENREVIEWS_PATH, "", ("cluster", "authentication.k8s.io", "tokenreviews", "create")),
        ("GET", "/version", "", ("nonResource", "", "/version", "get")),
        ("GET", "/apis/batch/v1", "", ("nonResource", "", "/apis/batch/v1", "get")),
    ],
)
def test_api_access_maps_requests_like_the_api_server(
    method: str, path: str, query: str, access: Access
) -> None:
    assert api_access(method, path, query) == access


#: The bearer token the test's callers present (checked by a TokenReview with AUTH_MODE=kubernetes).
CALLER_TOKEN = "caller-token"
CALLER = "system:serviceaccount:clients:client"


def _wait(condition: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _make_running_pod(emulator: EmulatorThread, job_id: str, namespace: str) -> str:
    """What the Job controller and the kubelet do: a pod from the Job's template, then running."""
    job = emulator.job(job_id, namespace)
    template = job["spec"]["template"]
    name = f"{job_id}-abcde"
    pods = f"/api/v1/namespaces/{namespace}/pods"
    labels = {**template["metadata"]["labels"], "batch.kubernetes.io/job-name": job_id, "job-name": job_id}
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": job_id,
        "uid": job["metadata"]["uid"],
        "controller": True,
    }
    meta = {"name": name, "namespace": namespace, "labels": labels, "ownerReferences": [owner]}
    emulator.request(
        "POST", pods, {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]}
    )
    now = datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    container = template["spec"]["containers"][0]["name"]
    status = {
        "phase": "Running",
        "containerStatuses": [{"name": container, "state": {"running": {"startedAt": now}}, "ready": True}],
    }
    emulator.request("PATCH", f"{pods}/{name}/status", {"status": status}, "application/merge-patch+json")
    return name


def exercise_every_rpc(emulator: EmulatorThread, svc: Any, namespace: str) -> set[str]:
    """Serve every JobScheduler RPC once, successfully; the names of the RPCs called."""
    md = (("authorization", f"Bearer {CALLER_TOKEN}"),)
    stub, t = svc.stub, 10
    called: set[str] = set()
    timer = pb.TimerJob(duration_seconds=30, timer_name="rbac", control_plane_endpoint="http://cp:50053")

    job_id = stub.ScheduleJob(
        pb.ScheduleJobRequest(name="rbac", timer_job=timer), timeout=t, metadata=md
    ).job_id
    called.add("ScheduleJob")
    assert (
        stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=t, metadata=md).job.job_id == job_id
    )
    called.add("GetJobStatus")
    listed = stub.ListJobs(pb.ListJobsRequest(), timeout=t, metadata=md)
    assert job_id in [j.job_id for j in listed.jobs]
    called.add("ListJobs")

    watch = stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=t, metadata=md)
    try:
        assert next(watch).job.job_id == job_id
    finally:
        watch.cancel()
    called.add("WatchJob")

    # From where ListJobs stood: a later change arrives, without racing the subscription.
    other = stub.ScheduleJob(pb.ScheduleJobRequest(name="rbac-2", timer_job=timer), timeout=t, metadata=md)
    watch = stub.WatchJobs(pb.WatchJobsRequest(resume_token=listed.resume_token), timeout=t, metadata=md)
    try:
        assert other.job_id in (event.job.job_id for event in watch)
    finally:
        watch.cancel()
    called.add("WatchJobs")

    pod = _make_running_pod(emulator, job_id, namespace)

    def pod_known() -> bool:
        job = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=t, metadata=md).job
        return pod in job.pod_names

    _wait(pod_known, "the pod in the job's status")
    emulator.write_log(pod, "hello", namespace=namespace)
    lines = stub.GetJobLogs(pb.GetJobLogsRequest(job_id=job_id), timeout=t, metadata=md)
    assert [line.line for line in lines] == ["hello"]
    emulator.end_log(pod, namespace=namespace)
    lines = stub.GetJobLogs(pb.GetJobLogsRequest(job_id=job_id, follow=True), timeout=t, metadata=md)
    assert [line.line for line in lines] == ["hello"]
    called.add("GetJobLogs")

    # A held job (its dependency is still running), then its admission once that one succeeds.
    dependent = stub.ScheduleJob(
        pb.ScheduleJobRequest(name="rbac-3", timer_job=timer, depends_on=[other.job_id]),
        timeout=t,
        metadata=md,
    ).job
    assert dependent.phase == pb.JOB_PHASE_WAITING
    queues = stub.ListQueues(pb.ListQueuesRequest(), timeout=t, metadata=md).queues
    assert [q.waiting for q in queues if q.name == "default"] == [1]
    called.add("ListQueues")
    types = stub.ListJobTypes(pb.ListJobTypesRequest(), timeout=t, metadata=md).types
    assert "timer" in [jt.name for jt in types]
    called.add("ListJobTypes")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    done = {"type": "Complete", "status": "True", "reason": "CompletionsReached", "lastTransitionTime": now}
    emulator.request(
        "PATCH",
        f"/apis/batch/v1/namespaces/{namespace}/jobs/{other.job_id}",
        {"status": {"startTime": now, "completionTime": now, "succeeded": 1, "conditions": [done]}},
        "application/merge-patch+json",
    )

    def admitted() -> bool:
        job = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=dependent.job_id), timeout=t, metadata=md).job
        return job.HasField("admitted_at")

    _wait(admitted, "the dependent job's admission")

    cancelled = stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=t, metadata=md)
    assert cancelled.job.phase == pb.JOB_PHASE_CANCELLED
    called.add("CancelJob")

    # Job templates (ConfigMaps) and a rerun of the cancelled job.
    job = pb.ScheduleJobRequest(timer_job=timer)
    stub.CreateJobTemplate(pb.CreateJobTemplateRequest(name="rbac", job=job), timeout=t, metadata=md)
    stub.UpdateJobTemplate(pb.UpdateJobTemplateRequest(name="rbac", description="2"), timeout=t, metadata=md)
    for version in (0, 1):
        stub.GetJobTemplate(pb.GetJobTemplateRequest(name="rbac", version=version), timeout=t, metadata=md)
    assert stub.ListJobTemplates(pb.ListJobTemplatesRequest(), timeout=t, metadata=md).templates
    from_template = stub.ScheduleJob(pb.ScheduleJobRequest(template="rbac"), timeout=t, metadata=md).job
    assert from_template.template_version == 2
    rerun = stub.RerunJob(pb.RerunJobRequest(job_id=job_id), timeout=t, metadata=md)
    assert rerun.rerun_of == job_id
    stub.DeleteJobTemplate(pb.DeleteJobTemplateRequest(name="rbac"), timeout=t, metadata=md)
    called.update(
        {"CreateJobTemplate", "UpdateJobTemplate", "GetJobTemplate", "ListJobTemplates", "DeleteJobTemplate"}
    )
    called.add("RerunJob")

    # Schedules (CronJobs); DeleteSchedule with cancel_jobs cancels the job TriggerSchedule made.
    nightly = pb.ScheduleJobRequest(name="nightly", timer_job=timer)
    spec = pb.CreateScheduleRequest(name="rbac", cron="0 3 * * *", time_zone="Europe/Berlin", job=nightly)
    assert stub.CreateSchedule(spec, timeout=t, metadata=md).HasField("next_run_time")
    stub.GetSchedule(pb.GetScheduleRequest(name="rbac"), timeout=t, metadata=md)
    assert stub.ListSchedules(pb.ListSchedulesRequest(), timeout=t, metadata=md).schedules
    stub.UpdateSchedule(pb.UpdateScheduleRequest(name="rbac", suspend=True), timeout=t, metadata=md)
    triggered = stub.TriggerSchedule(pb.TriggerScheduleRequest(name="rbac"), timeout=t, metadata=md)
    _wait(
        lambda: (
            triggered.job_id
            in stub.GetSchedule(pb.GetScheduleRequest(name="rbac"), timeout=t, metadata=md).active_job_ids
        ),
        "the triggered job among the schedule's",
    )
    deleted = stub.DeleteSchedule(
        pb.DeleteScheduleRequest(name="rbac", cancel_jobs=True), timeout=t, metadata=md
    )
    assert list(deleted.cancelled_job_ids) == [triggered.job_id]
    called.update(
        {
            "CreateSchedule",
            "GetSchedule",
            "ListSchedules",
            "UpdateSchedule",
            "TriggerSchedule",
            "DeleteSchedule",
        }
    )
    return called


class Derivation:
    """What the running service asked the API server for while serving every RPC."""

    def __init__(self, requests: list[tuple[str, str, str]], rpcs: set[str]) -> None:
        self.requests = requests  # (method, path, query) of each request the service sent
        self.rpcs = rpcs
        self.access = {api_access(*r) for r in requests}


@pytest.fixture(scope="module")
def derivation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Derivation]:
    emulator = EmulatorThread()
    try:
        kubeconfig = write_kubeconfig(tmp_path_factory.mktemp("rbac") / "kubeconfig", emulator.url)
        service_token = json.loads(kubeconfig.read_text())["users"][0]["user"]["token"]
        # AUTH_MODE=kubernetes, as k8s/base/configmap.yaml sets it: callers' tokens are reviewed.
        emulator.add_token(CALLER_TOKEN, CALLER, audiences=("jobscheduler",))
        svc = kubernetes_service(kubeconfig, auth_mode="kubernetes", auth_audience="jobscheduler")
        try:
            rpcs = exercise_every_rpc(emulator, svc, "default")
        finally:
            svc.stop()

        def sent_by_the_service(e: Any) -> list[tuple[str, str, str]]:
            # The test's own requests (the "Job controller", the "kubelet") carry no credentials.
            return [
                (r.method.value, r.url.path, r.url.query_string)
                for r in e._requests
                if {k.lower(): v for k, v in r.headers.items()}.get("authorization")
                == f"Bearer {service_token}"
            ]

        requests = emulator.call(sent_by_the_service)
    finally:
        emulator.stop()
    yield Derivation(requests, rpcs)


def rbac_mismatch(needed: set[Access], docs: list[Doc]) -> list[str]:
    """What the Role and ClusterRole of ``docs`` lack, and what they grant that is never used."""
    have = granted(docs)
    where = {"namespaced": "Role", "cluster": "ClusterRole"}
    missing = [f"missing from the {where.get(a[0], a[0])}: {a[1:]}" for a in sorted(needed - have)]
    unused = [f"granted by the {where[a[0]]} but never used: {a[1:]}" for a in sorted(have - needed)]
    return missing + unused


def test_every_rpc_is_exercised(derivation: Derivation) -> None:
    rpcs = set(pb.DESCRIPTOR.services_by_name["JobScheduler"].methods_by_name)
    assert derivation.rpcs == rpcs, f"exercise_every_rpc must also call {sorted(rpcs - derivation.rpcs)}"
    assert derivation.requests, "no request of the service was recorded"


def test_the_service_stays_in_its_namespace(derivation: Derivation) -> None:
    namespaces = {
        m["ns"] for _, path, _ in derivation.requests if (m := re.search(r"/namespaces/(?P<ns>[^/]+)/", path))
    }
    assert namespaces == {"default"}, "the RoleBinding grants the Role in the service's own namespace only"


def test_rbac_is_exactly_what_the_code_uses(derivation: Derivation) -> None:
    """The Role (namespaced) and the ClusterRole grant exactly the API calls the service makes."""
    assert rbac_mismatch(derivation.access, DOCS) == []


def test_tokenreview_rule_is_derived_from_the_code(derivation: Derivation) -> None:
    """The ClusterRole's one rule: AUTH_MODE=kubernetes reviews each caller's token."""
    assert ("cluster", "authentication.k8s.io", "tokenreviews", "create") in derivation.access


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("Role loses patch", "missing from the Role: ('batch', 'jobs', 'patch')"),
        ("Role gains delete", "granted by the Role but never used: ('batch', 'jobs', 'delete')"),
        ("Role gains pods get", "granted by the Role but never used: ('', 'pods', 'get')"),
        (
            "ClusterRole grants jobs create",
            "granted by the ClusterRole but never used: ('batch', 'jobs', 'create')",
        ),
    ],
)
def test_the_rbac_derivation_can_fail(derivation: Derivation, change: str, expected: str) -> None:
    docs = copy.deepcopy(DOCS)
    role = next(d for d in docs if d["kind"] == "Role")
    jobs = next(r for r in role["rules"] if r["resources"] == ["jobs"])
    if change == "Role loses patch":
        jobs["verbs"].remove("patch")
    elif change == "Role gains delete":
        jobs["verbs"].append("delete")
    elif change == "Role gains pods get":
        next(r for r in role["rules"] if r["resources"] == ["pods"])["verbs"].append("get")
    else:
        cluster_role = next(d for d in docs if d["kind"] == "ClusterRole")
        cluster_role["rules"].append({"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create"]})
    assert expected in rbac_mismatch(derivation.access, docs)


# --------------------------------------------------------------------------- Deployment


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_images_are_the_pinned_release(build: str) -> None:
    """One image, one tag: every container runs the release kustomization.yaml pins (`images:`),
    a final version (the latest git tag's, when there is one), pulled IfNotPresent (immutable)."""
    containers = [
        container
        for doc in BUILDS[build]
        for key in ("initContainers", "containers")
        for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get(key, ())
    ]
    assert containers
    for container in containers:
        assert container["image"] == IMAGE and container["imagePullPolicy"] == "IfNotPresent"
    version = Version(RELEASE_TAG)
    assert str(version) == RELEASE_TAG and not (version.is_prerelease or version.local), RELEASE_TAG
    tag = subprocess.run(
        ["git", "describe", "--tags", "--abbrev=0", "--match", "v[0-9]*"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=10,
    )
    if tag.returncode == 0:  # a release exists: the manifests deploy it
        released = tag.stdout.strip().removeprefix("v")
        assert released == RELEASE_TAG, "update newTag in k8s/base/kustomization.yaml"


def test_timer_image_defaults_to_the_servers_own_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """TIMER_IMAGE is not in the ConfigMap: a server of the pinned release defaults it to its own
    image at its own version, which is the Deployment's image."""
    monkeypatch.setenv("JOBSCHEDULER_VERSION", RELEASE_TAG)  # as the image sets it
    settings = Settings(**{k.lower(): v for k, v in _settings_env("base").items()})
    assert settings.timer_image == IMAGE == _container()["image"]


def test_deployment_basics() -> None:
    deployment = _one("Deployment")
    spec = deployment["spec"]
    pod_spec = spec["template"]["spec"]
    assert spec["replicas"] == 2
    assert pod_spec["terminationGracePeriodSeconds"] == 30
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= _pod_labels().items()
    for constraint in pod_spec.get("topologySpreadConstraints", ()):
        assert _selects(constraint["labelSelector"], _pod_labels())

    container = _container()
    assert container["image"] == IMAGE
    assert container["args"] == ["serve"]
    assert "command" not in container, "the image ENTRYPOINT is `jobscheduler`"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": GRPC_PORT, "http": HTTP_PORT}
    resources = container["resources"]
    for section in ("requests", "limits"):
        assert set(resources[section]) == {"cpu", "memory"}


def _settings_env(build: str) -> dict[str, str]:
    """The service's environment from the ConfigMap and the container's own env (K8S_NAMESPACE
    as the downward API fills it in)."""
    env = dict(_one("ConfigMap", build=build)["data"])
    for var in _container(build)["env"]:
        env[var["name"]] = var.get("value", NAMESPACE)
    return env


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_environment_names_only_real_settings(build: str) -> None:
    container = _container(build)
    env = {e["name"]: e for e in container["env"]}
    assert env["K8S_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["IN_CLUSTER"]["value"] == "true"
    assert container["envFrom"] == [{"configMapRef": {"name": NAME}}]
    config = _one("ConfigMap", build=build)["data"]
    assert not set(config) & set(env), "ConfigMap keys shadowed by explicit env"
    fields = {name.upper() for name in Settings.model_fields}
    assert set(_settings_env(build)) <= fields, f"not settings: {set(_settings_env(build)) - fields}"
    # And they make valid settings: the service would start with them.
    settings = Settings(**{k.lower(): v for k, v in _settings_env(build).items()})
    assert settings.k8s_namespace == NAMESPACE
    assert settings.grpc_listen_host == "0.0.0.0"
    assert settings.health_listen_host == "0.0.0.0"  # IN_CLUSTER=true: the probes reach the pod IP
    assert settings.auth_mode == "kubernetes"
    assert settings.auth_audience == "jobscheduler"


def test_base_config() -> None:
    config = _one("ConfigMap")["data"]
    assert config["GRPC_PORT"] == str(GRPC_PORT)
    assert config["HEALTH_PORT"] == str(HTTP_PORT)
    # Not set: timer pods run the server's own image at its own version (one image, one tag).
    assert "TIMER_IMAGE" not in config
    assert config["GRPC_HOST"] == "0.0.0.0"
    assert config["AUTH_MODE"] == "kubernetes"
    assert config["AUTH_AUDIENCE"] == "jobscheduler"
    assert config["ALLOW_INSECURE"] == "true", "plaintext inside the cluster, behind the NetworkPolicy"
    assert not any(key.startswith("TLS_") for key in config)
    for key in (
        "LOG_LEVEL",
        "DEFAULT_CPU_REQUEST",
        "DEFAULT_MEMORY_REQUEST",
        "DEFAULT_CPU_LIMIT",
        "DEFAULT_MEMORY_LIMIT",
    ):
        assert key in config
    assert "K8S_NAMESPACE" not in config


@pytest.mark.parametrize("build", sorted(BUILDS))
def test_deployment_meets_pod_security_restricted(build: str) -> None:
    assert check_object(_one("Deployment", build=build)) == []


def test_container_security_context() -> None:
    pod_spec = _pod_spec()
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
    assert pod_spec["securityContext"]["runAsUser"] == UID


def test_tmp_is_a_writable_empty_dir() -> None:
    mounts = {m["mountPath"]: m for m in _container()["volumeMounts"]}
    assert not mounts["/tmp"].get("readOnly", False)
    volumes = {v["name"]: v for v in _pod_spec()["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_projected_token_is_exactly_what_in_cluster_config_needs() -> None:
    mounts = [m for m in _container()["volumeMounts"] if m["mountPath"] == SA_DIR]
    assert len(mounts) == 1
    assert mounts[0]["readOnly"] is True
    assert "subPath" not in mounts[0], "a subPath mount would never see the rotated token"
    volumes = {v["name"]: v for v in _pod_spec()["volumes"]}
    assert volumes[mounts[0]["name"]] == {
        "name": mounts[0]["name"],
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ]
        },
    }
    # The files the service and the Kubernetes client read are the ones projected.
    for path in (
        IN_CLUSTER_TOKEN,
        incluster_config.SERVICE_TOKEN_FILENAME,
        incluster_config.SERVICE_CERT_FILENAME,
    ):
        assert posixpath.dirname(path) == SA_DIR
    assert posixpath.basename(incluster_config.SERVICE_CERT_FILENAME) == "ca.crt"
    assert (
        posixpath.basename(IN_CLUSTER_TOKEN)
        == posixpath.basename(incluster_config.SERVICE_TOKEN_FILENAME)
        == "token"
    )


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


# --------------------------------------------------------------------------- Service, PDB, NetworkPolicy


def test_service_ports_and_selector() -> None:
    service = _one("Service")
    ports = {p["name"]: (p["port"], p["targetPort"], p.get("appProtocol")) for p in service["spec"]["ports"]}
    assert ports == {"grpc": (GRPC_PORT, "grpc", "grpc"), "http": (HTTP_PORT, "http", "http")}
    assert _selects({"matchLabels": service["spec"]["selector"]}, _pod_labels())


def test_pod_disruption_budget_keeps_a_replica() -> None:
    pdb = _one("PodDisruptionBudget")["spec"]
    assert _selects(pdb["selector"], _pod_labels())
    assert pdb["selector"] == _one("Deployment")["spec"]["selector"]
    assert pdb.get("minAvailable") == 1 or pdb.get("maxUnavailable") == 1
    assert "minAvailable" not in pdb or pdb["minAvailable"] < _one("Deployment")["spec"]["replicas"]


def test_network_policy_lets_only_clients_and_monitoring_in() -> None:
    policy = _one("NetworkPolicy")["spec"]
    assert _selects(policy["podSelector"], _pod_labels())
    assert policy["podSelector"] == _one("Deployment")["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress"], "egress stays open: the API server's address is not static"
    by_port = {}
    for rule in policy["ingress"]:
        assert len(rule["ports"]) == 1
        (port,) = rule["ports"]
        assert port.get("protocol", "TCP") == "TCP"
        by_port[port["port"]] = rule["from"]
    assert by_port == {
        GRPC_PORT: [
            {"namespaceSelector": {}, "podSelector": {"matchLabels": {"jobscheduler.io/client": "true"}}}
        ],
        HTTP_PORT: [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
    }
    container_ports = {p["containerPort"] for p in _container()["ports"]}
    assert set(by_port) == container_ports


# --------------------------------------------------------------------------- TLS overlay


def test_tls_overlay_changes_only_the_deployment_and_config() -> None:
    base = {_doc_id(d): d for d in BUILDS["base"]}
    tls = {_doc_id(d): d for d in BUILDS["tls"]}
    assert base.keys() == tls.keys()
    changed = sorted(key for key in base if base[key] != tls[key])
    assert changed == ["ConfigMap/jobscheduler", "Deployment/jobscheduler"]


def test_tls_overlay_mounts_the_certificate_secret() -> None:
    mounts = [m for m in _container("tls")["volumeMounts"] if m["mountPath"] == TLS_MOUNT]
    assert len(mounts) == 1 and mounts[0]["readOnly"] is True
    volumes = {v["name"]: v for v in _pod_spec("tls")["volumes"]}
    secret = volumes[mounts[0]["name"]]["secret"]
    assert secret["secretName"] == "jobscheduler-tls"
    assert {(i["key"], i["path"]) for i in secret["items"]} == {
        ("tls.crt", "tls.crt"),
        ("tls.key", "tls.key"),
        ("ca.crt", "ca.crt"),
    }
    assert secret.get("defaultMode", 0o644) & 0o007 == 0, "the key is not world-readable"
    # The base's mounts are all still there.
    assert {m["mountPath"] for m in _container("tls")["volumeMounts"]} == {
        m["mountPath"] for m in _container()["volumeMounts"]
    } | {TLS_MOUNT}


def test_tls_overlay_turns_tls_on() -> None:
    config = _one("ConfigMap", build="tls")["data"]
    assert config["ALLOW_INSECURE"] == "false"
    files = {key: config[key] for key in ("TLS_CERT_FILE", "TLS_KEY_FILE", "TLS_CLIENT_CA_FILE")}
    assert files == {
        "TLS_CERT_FILE": f"{TLS_MOUNT}/tls.crt",
        "TLS_KEY_FILE": f"{TLS_MOUNT}/tls.key",
        "TLS_CLIENT_CA_FILE": f"{TLS_MOUNT}/ca.crt",
    }
    settings = Settings(**{k.lower(): v for k, v in _settings_env("tls").items()})
    assert settings.tls_enabled and not settings.allow_insecure
    assert settings.grpc_listen_host == "0.0.0.0"


# --------------------------------------------------------------------------- Taskfile


def _task_commands(name: str) -> list[str]:
    taskfile = yaml.safe_load(TASKFILE.read_text())
    variables = {k: v for k, v in taskfile["vars"].items() if isinstance(v, str)}
    cmds = taskfile["tasks"][name]["cmds"]
    out = []
    for cmd in cmds:
        assert isinstance(cmd, str), f"{name}: {cmd!r}"
        out.append(re.sub(r"\{\{\s*\.(\w+)\s*\}\}", lambda m: variables[m[1]], cmd))
    return out


def test_taskfile_k8s_tasks() -> None:
    assert _task_commands("k8s:apply") == ["kubectl apply -k k8s/"]
    assert _task_commands("k8s:apply:tls") == ["kubectl apply -k k8s/tls/"]
    (delete,) = _task_commands("k8s:delete")
    assert delete.startswith("kubectl delete -k k8s/")
    (forward,) = _task_commands("k8s:port-forward")
    assert forward.startswith("kubectl port-forward ")
    assert f"-n {NAMESPACE}" in forward and f"svc/{NAME}" in forward
    assert f"{GRPC_PORT}:{GRPC_PORT}" in forward.split() and f"{HTTP_PORT}:{HTTP_PORT}" in forward.split()
    (logs,) = _task_commands("k8s:logs")
    assert logs.startswith("kubectl logs ") and f"-n {NAMESPACE}" in logs
    selector = logs.split(" -l ")[1].split()[0]
    labels = dict(term.split("=") for term in selector.split(","))
    assert _selects({"matchLabels": labels}, _pod_labels())


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
    pinned = r"^ARG PYTHON_IMAGE=\S*python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$"
    assert re.search(pinned, text, re.M), "the base image: an exact Python release"
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
