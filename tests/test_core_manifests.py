"""core.manifests and core.podpolicy, pure: job_manifest, the pod-level policy every Job we create
must meet (validate_job_manifest), and the annotation parsers tolerating whatever a Job carries."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pod_security import check_object
from test_pod_security import MUTATIONS

from jobscheduler.core.annotations import held_failure, held_phase, record_fields, start_after
from jobscheduler.core.errors import BackendError
from jobscheduler.core.limits import ImagePolicy
from jobscheduler.core.manifests import (
    ADMISSION_ANNOTATION,
    ADMITTED_AT_ANNOTATION,
    DEPENDS_ON_ANNOTATION,
    ENQUEUED_AT_ANNOTATION,
    FAILED_AT_ANNOTATION,
    FAILURE_REASON_ANNOTATION,
    MAX_RETRIES_ANNOTATION,
    OWNER_ANNOTATION,
    PRIORITY_ANNOTATION,
    QUEUE_ANNOTATION,
    RETRY_BACKOFF_ANNOTATION,
    RETRY_NUMBER_ANNOTATION,
    RETRY_OF_ANNOTATION,
    START_AFTER_ANNOTATION,
    JobDefaults,
    RenderContext,
    job_manifest,
    validate_job_manifest,
)
from jobscheduler.core.model import JobPhase, JobRecord, Priority

K8S_VERSION = "1.31.0"
IMAGE = "ghcr.io/acme/tool:1"


def manifest(**overrides: Any) -> dict[str, Any]:
    ctx = RenderContext(
        job_id="job-abcdefghij",
        name="nightly",
        job_type="timer",
        defaults=JobDefaults(namespace="jobs", ttl_seconds_after_finished=600),
        labels={"team": "a"},
        owner="alice",
    )
    args: dict[str, Any] = {"image": IMAGE, "command": ["run"], "env": {"A": "1"}, **overrides}
    return job_manifest(ctx, **args)


def test_job_manifest_is_pure_and_carries_identity_policy_and_the_restricted_context() -> None:
    m = manifest(active_deadline_seconds=90, permanent_exit_codes=(2, 2, 1))
    assert m == manifest(active_deadline_seconds=90, permanent_exit_codes=(2, 2, 1))
    assert m["metadata"]["name"] == "job-abcdefghij" and m["metadata"]["namespace"] == "jobs"
    assert m["metadata"]["labels"] == {
        "team": "a",
        "app.kubernetes.io/managed-by": "jobscheduler",
        "jobscheduler.io/job-id": "job-abcdefghij",
        "jobscheduler.io/job-type": "timer",
        "jobscheduler.io/job-name": "nightly",
    }
    assert m["metadata"]["annotations"][OWNER_ANNOTATION] == "alice"
    spec = m["spec"]
    assert (spec["activeDeadlineSeconds"], spec["ttlSecondsAfterFinished"], spec["backoffLimit"]) == (
        90,
        600,
        3,
    )
    assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [1, 2]
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert pod["containers"][0]["env"] == [{"name": "A", "value": "1"}]
    # Each manifest has its own security context (mutating one does not change the next).
    pod["containers"][0]["securityContext"]["capabilities"]["drop"].append("X")
    assert manifest()["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"] == {
        "drop": ["ALL"]
    }
    kubernetes_validate.validate(manifest(), K8S_VERSION, strict=True)
    assert check_object(manifest()) == []
    validate_job_manifest(manifest(), images=ImagePolicy(("ghcr.io/acme",)))


def _pod(m: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = m["spec"]["template"]["spec"]
    return pod


def _container(m: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = _pod(m)["containers"][0]
    return container


Mutation = Callable[[dict[str, Any]], object]

#: (id, mutation of a rendered Job, fragment of the refusal)
FORBIDDEN: list[tuple[str, Mutation, str]] = [
    ("hostPath", lambda m: _pod(m)["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "volumes[1]"),
    (
        "secret volume",
        lambda m: _pod(m)["volumes"].append({"name": "s", "secret": {"secretName": "x"}}),
        "emptyDir",
    ),
    (
        "pvc",
        lambda m: _pod(m)["volumes"].append({"name": "p", "persistentVolumeClaim": {"claimName": "x"}}),
        "volumes",
    ),
    (
        "projected token",
        lambda m: _pod(m)["volumes"].append({"name": "t", "projected": {"sources": []}}),
        "volumes",
    ),
    ("hostNetwork", lambda m: _pod(m).update(hostNetwork=True), "hostNetwork"),
    ("hostPID", lambda m: _pod(m).update(hostPID=True), "hostPID"),
    ("hostIPC", lambda m: _pod(m).update(hostIPC=True), "hostIPC"),
    ("serviceAccountName", lambda m: _pod(m).update(serviceAccountName="jobscheduler"), "serviceAccountName"),
    ("serviceAccount", lambda m: _pod(m).update(serviceAccount="admin"), "serviceAccount"),
    (
        "token mounted",
        lambda m: _pod(m).update(automountServiceAccountToken=True),
        "automountServiceAccountToken",
    ),
    ("token default", lambda m: _pod(m).pop("automountServiceAccountToken"), "automountServiceAccountToken"),
    (
        "initContainers",
        lambda m: _pod(m).update(initContainers=[copy.deepcopy(_container(m))]),
        "initContainers",
    ),
    ("ephemeral", lambda m: _pod(m).update(ephemeralContainers=[{"name": "d", "image": "x"}]), "ephemeral"),
    ("nodeName", lambda m: _pod(m).update(nodeName="control-plane"), "nodeName"),
    ("tolerations", lambda m: _pod(m).update(tolerations=[{"operator": "Exists"}]), "tolerations"),
    ("privileged", lambda m: _container(m)["securityContext"].update(privileged=True), "privileged"),
    ("root", lambda m: _container(m)["securityContext"].update(runAsUser=0), "root"),
    ("hostPort", lambda m: _container(m).update(ports=[{"containerPort": 80, "hostPort": 80}]), "hostPort"),
    ("envFrom", lambda m: _container(m).update(envFrom=[{"secretRef": {"name": "x"}}]), "envFrom"),
    (
        "secret env",
        lambda m: _container(m)["env"].append({"name": "T", "valueFrom": {"secretKeyRef": {"name": "x"}}}),
        "valueFrom",
    ),
    ("other image", lambda m: _container(m).update(image="evil.example/miner:1"), "is not allowed (ALLOWED"),
    ("no image", lambda m: _container(m).pop("image"), "image must be set"),
    ("no containers", lambda m: _pod(m).update(containers=[]), "containers must not be empty"),
    ("restartPolicy", lambda m: _pod(m).update(restartPolicy="Always"), "restartPolicy"),
    (
        "seccomp pod",
        lambda m: _pod(m)["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        "seccomp",
    ),
    (
        "apparmor",
        lambda m: m["spec"]["template"]["metadata"].update(
            annotations={"container.apparmor.security.beta.kubernetes.io/timer": "unconfined"}
        ),
        "apparmor",
    ),
    ("garbage pod", lambda m: m["spec"]["template"].update(spec="garbage"), "containers must not be empty"),
    ("garbage volume", lambda m: _pod(m)["volumes"].append("garbage"), "volumes[1]"),
    ("garbage labels", lambda m: m["metadata"].update(labels=["x"]), "lacks"),
    ("no job-id label", lambda m: m["metadata"]["labels"].pop("jobscheduler.io/job-id"), "job-id"),
    ("kind", lambda m: m.update(kind="Pod"), "batch/v1 Job"),
]


@pytest.mark.parametrize(("mutate", "fragment"), [f[1:] for f in FORBIDDEN], ids=[f[0] for f in FORBIDDEN])
def test_validate_job_manifest_refuses_each_forbidden_pod_setting(mutate: Mutation, fragment: str) -> None:
    images = ImagePolicy(("ghcr.io/acme",))
    validate_job_manifest(manifest(), images=images)
    m = manifest()
    mutate(m)
    with pytest.raises(BackendError) as err:
        validate_job_manifest(m, images=images)
    assert fragment in err.value.message


@pytest.mark.parametrize("mutate", [m[1] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_whatever_pod_security_restricted_refuses_the_policy_refuses_too(mutate: Mutation) -> None:
    m = manifest()
    mutate(_pod(m))
    assert check_object(m)  # (the Pod Security checker's own tests show each is a violation)
    with pytest.raises(BackendError):
        validate_job_manifest(m)


def test_images_are_checked_only_where_a_policy_is_configured_and_trusted_images_pass() -> None:
    m = manifest(image="registry.local/timer:2")
    validate_job_manifest(m)  # no ImagePolicy: any image
    with pytest.raises(BackendError):
        validate_job_manifest(m, images=ImagePolicy(("ghcr.io/acme",)))
    validate_job_manifest(
        m, images=ImagePolicy(("ghcr.io/acme",)), trusted_images=("registry.local/timer:2",)
    )
    # The default service account, named, is what no name means.
    m = manifest()
    _pod(m)["serviceAccountName"] = "default"
    validate_job_manifest(m)


GARBAGE = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "-1", "1_0", "١٢", "9" * 5000, "2026-13-01T00:00:00Z", "queued", "NaN", ",,,", "Z"]),
)
KEYS = [
    ADMISSION_ANNOTATION,
    ADMITTED_AT_ANNOTATION,
    DEPENDS_ON_ANNOTATION,
    ENQUEUED_AT_ANNOTATION,
    FAILED_AT_ANNOTATION,
    FAILURE_REASON_ANNOTATION,
    MAX_RETRIES_ANNOTATION,
    OWNER_ANNOTATION,
    PRIORITY_ANNOTATION,
    QUEUE_ANNOTATION,
    RETRY_BACKOFF_ANNOTATION,
    RETRY_NUMBER_ANNOTATION,
    RETRY_OF_ANNOTATION,
    START_AFTER_ANNOTATION,
]


@settings(max_examples=150, deadline=None)
@given(annotations=st.dictionaries(st.sampled_from(KEYS), GARBAGE, max_size=len(KEYS)))
def test_annotation_parsers_tolerate_garbage(annotations: dict[str, str]) -> None:
    fields = record_fields(annotations)
    record = JobRecord.build(
        job_id="job-abcdefghij", name="n", type="t", namespace="d", phase=JobPhase.FAILED, **fields
    )
    for key in ("retry_number", "max_retries", "retry_backoff_seconds"):
        assert 0 <= getattr(record, key) < 10**9
    assert isinstance(record.priority, Priority)
    for when in (record.start_after, record.enqueued_at, record.admitted_at):
        assert when is None or when.tzinfo is not None
    assert held_phase(annotations) in (None, JobPhase.QUEUED, JobPhase.SCHEDULED, JobPhase.WAITING)
    failure = held_failure(annotations)
    assert failure is None or isinstance(failure[0], str)


def test_annotation_parsers_read_what_we_write() -> None:
    annotations = {
        MAX_RETRIES_ANNOTATION: "3",
        RETRY_NUMBER_ANNOTATION: "1",
        RETRY_BACKOFF_ANNOTATION: "10",
        RETRY_OF_ANNOTATION: "job-root000001",
        PRIORITY_ANNOTATION: "HIGH",
        QUEUE_ANNOTATION: "batch",
        DEPENDS_ON_ANNOTATION: "job-a000000001,job-b000000001",
        START_AFTER_ANNOTATION: "2026-11-23T10:00:00.250000Z",
        ADMISSION_ANNOTATION: "waiting",
    }
    fields = record_fields(annotations)
    assert (fields["max_retries"], fields["retry_number"], fields["retry_backoff_seconds"]) == (3, 1, 10)
    assert (fields["queue"], fields["priority"]) == ("batch", Priority.HIGH)
    assert fields["depends_on"] == ("job-a000000001", "job-b000000001")
    assert start_after(annotations) == datetime(2026, 11, 23, 10, 0, 0, 250000, tzinfo=UTC)
    assert held_phase(annotations) is JobPhase.WAITING
    # Numbers that int() would take but we never write read as 0.
    for raw in ("-3", "1_0", "١٢", " 4", "9" * 5000):
        assert record_fields({MAX_RETRIES_ANNOTATION: raw})["max_retries"] == 0
