"""Batch/v1 Job manifests, built by pure functions over dicts, and their validation.

Every job type renders through :func:`job_manifest`, so every Job this
service creates carries the labels it is found by and the restricted
security context.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from jobscheduler.core.errors import BackendError
from jobscheduler.core.model import DEFAULT_QUEUE, JobPhase, Priority
from jobscheduler.core.naming import dns1123_label_problem, label_key_problem, label_value_problem

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "jobscheduler"
JOB_ID_LABEL: Final = "jobscheduler.io/job-id"
JOB_TYPE_LABEL: Final = "jobscheduler.io/job-type"
JOB_NAME_LABEL: Final = "jobscheduler.io/job-name"
JOB_NAME_ANNOTATION: Final = "jobscheduler.io/name"
JOB_TYPE_ANNOTATION: Final = "jobscheduler.io/type"
CANCELLED_AT_ANNOTATION: Final = "jobscheduler.io/cancelled-at"
CANCEL_REASON_ANNOTATION: Final = "jobscheduler.io/cancel-reason"
#: The caller identity that scheduled the job: owner-scoped access reads it back.
OWNER_ANNOTATION: Final = "jobscheduler.io/owner"
#: ScheduleJob's request_id, and a digest of the request it came with (idempotent retries).
REQUEST_ID_ANNOTATION: Final = "jobscheduler.io/request-id"
REQUEST_HASH_ANNOTATION: Final = "jobscheduler.io/request-hash"
#: Retries: the policy (on every job of a chain) and the link (on each retry; also a label).
MAX_RETRIES_ANNOTATION: Final = "jobscheduler.io/max-retries"
RETRY_BACKOFF_ANNOTATION: Final = "jobscheduler.io/retry-backoff-seconds"
RETRY_OF_ANNOTATION: Final = "jobscheduler.io/retry-of"
RETRY_OF_LABEL: Final = "jobscheduler.io/retry-of"
RETRY_NUMBER_ANNOTATION: Final = "jobscheduler.io/retry-number"
#: A job created suspended (spec.suspend) to be resumed at this time (RFC 3339, UTC).
START_AFTER_ANNOTATION: Final = "jobscheduler.io/start-after"
#: Admission: the queue (also a label, for selectors), the priority, the jobs that must
#: succeed first (comma-separated ids) and when the job was submitted (microseconds: FIFO).
QUEUE_ANNOTATION: Final = "jobscheduler.io/queue"
QUEUE_LABEL: Final = "jobscheduler.io/queue"
PRIORITY_ANNOTATION: Final = "jobscheduler.io/priority"
DEPENDS_ON_ANNOTATION: Final = "jobscheduler.io/depends-on"
ENQUEUED_AT_ANNOTATION: Final = "jobscheduler.io/enqueued-at"
#: What a held (suspended, not yet admitted) job waits for: queued, scheduled or waiting.
ADMISSION_ANNOTATION: Final = "jobscheduler.io/admission"
#: When the admission loop unsuspended the job.
ADMITTED_AT_ANNOTATION: Final = "jobscheduler.io/admitted-at"
#: A held job failed without running (DependencyFailed, DependencyNotFound): why, and when.
FAILURE_REASON_ANNOTATION: Final = "jobscheduler.io/failure-reason"
FAILURE_MESSAGE_ANNOTATION: Final = "jobscheduler.io/failure-message"
FAILED_AT_ANNOTATION: Final = "jobscheduler.io/failed-at"

#: The label selector that finds every Job this service manages.
MANAGED_SELECTOR: Final = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
#: Label keys (and the prefix) callers may not set themselves.
RESERVED_LABEL_PREFIX: Final = "jobscheduler.io/"
RESERVED_LABELS: Final = frozenset({MANAGED_BY_LABEL})

#: The UID/GID job containers run as (the project image's user), so that images
#: without a numeric USER still satisfy runAsNonRoot.
JOB_RUN_AS_USER: Final = 10001

_RESTRICTED_CONTAINER_SECURITY_CONTEXT: Final[Mapping[str, Any]] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True, slots=True)
class JobDefaults:
    """Service-wide settings every rendered Job uses."""

    namespace: str = "default"
    cpu_request: str = "100m"
    memory_request: str = "64Mi"
    cpu_limit: str = "500m"
    memory_limit: str = "128Mi"
    backoff_limit: int = 3
    deadline_grace_seconds: int = 60
    #: ``ttlSecondsAfterFinished``; None keeps finished Jobs until deleted.
    ttl_seconds_after_finished: int | None = 86400


@dataclass(frozen=True, slots=True)
class RenderContext:
    """What a handler needs besides its own parameters to render a Job."""

    job_id: str
    name: str
    job_type: str
    defaults: JobDefaults = field(default_factory=JobDefaults)
    labels: Mapping[str, str] = field(default_factory=dict)
    owner: str = ""


def job_manifest(
    ctx: RenderContext,
    *,
    image: str,
    command: Sequence[str],
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    active_deadline_seconds: int | None = None,
    backoff_limit: int | None = None,
    permanent_exit_codes: Sequence[int] = (),
) -> dict[str, Any]:
    """The batch/v1 Job for one job of any type (pure: same input, same dict)."""
    d = ctx.defaults
    identity = {
        MANAGED_BY_LABEL: MANAGED_BY,
        JOB_ID_LABEL: ctx.job_id,
        JOB_TYPE_LABEL: ctx.job_type,
    }
    labels = {**ctx.labels, **identity, JOB_NAME_LABEL: ctx.name}
    spec: dict[str, Any] = {
        "backoffLimit": d.backoff_limit if backoff_limit is None else backoff_limit,
        "template": {
            "metadata": {"labels": identity},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": JOB_RUN_AS_USER,
                    "runAsGroup": JOB_RUN_AS_USER,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": ctx.job_type,
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": list(command),
                        "args": list(args),
                        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
                        "resources": {
                            "requests": {"cpu": d.cpu_request, "memory": d.memory_request},
                            "limits": {"cpu": d.cpu_limit, "memory": d.memory_limit},
                        },
                        "securityContext": _deep_copy(_RESTRICTED_CONTAINER_SECURITY_CONTEXT),
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }
                ],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
            },
        },
    }
    if active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = active_deadline_seconds
    if permanent_exit_codes:
        # Exit codes that mean "retrying cannot help" fail the Job at once (reason
        # PodFailurePolicy); evictions and other disruptions do not count as failures.
        spec["podFailurePolicy"] = {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {
                        "containerName": ctx.job_type,
                        "operator": "In",
                        "values": sorted(set(permanent_exit_codes)),
                    },
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        }
    if d.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = d.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": ctx.job_id,
            "namespace": d.namespace,
            "labels": labels,
            "annotations": {
                JOB_NAME_ANNOTATION: ctx.name,
                JOB_TYPE_ANNOTATION: ctx.job_type,
                **({OWNER_ANNOTATION: ctx.owner} if ctx.owner else {}),
            },
        },
        "spec": spec,
    }


def validate_job_manifest(manifest: Mapping[str, Any]) -> None:
    """Check a rendered manifest before it is sent: a handler bug must not become a cluster object.

    Raises :class:`BackendError` (an internal error, not the caller's) naming what is wrong.
    """
    problems: list[str] = []
    if manifest.get("apiVersion") != "batch/v1" or manifest.get("kind") != "Job":
        problems.append("apiVersion/kind must be batch/v1 Job")
    meta = manifest.get("metadata") or {}
    name = meta.get("name", "")
    if (p := dns1123_label_problem(name)) is not None:
        problems.append(f"metadata.name {p}")
    labels = meta.get("labels") or {}
    for key in (MANAGED_BY_LABEL, JOB_ID_LABEL, JOB_TYPE_LABEL):
        if key not in labels:
            problems.append(f"metadata.labels lacks {key}")
    for key, value in labels.items():
        if (p := label_key_problem(key)) is not None or (p := label_value_problem(value)) is not None:
            problems.append(f"metadata.labels[{key}] {p}")
    pod = ((manifest.get("spec") or {}).get("template") or {}).get("spec") or {}
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append("spec.template.spec.restartPolicy must be Never or OnFailure")
    containers = pod.get("containers") or []
    if not containers:
        problems.append("spec.template.spec.containers must not be empty")
    for i, c in enumerate(containers):
        where = f"spec.template.spec.containers[{i}]"
        if not c.get("image"):
            problems.append(f"{where}.image must be set")
        sc = c.get("securityContext") or {}
        for key, want in _RESTRICTED_CONTAINER_SECURITY_CONTEXT.items():
            if sc.get(key) != want:
                problems.append(f"{where}.securityContext.{key} must be {want!r}")
    if problems:
        raise BackendError("invalid Job manifest: " + "; ".join(problems))


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


#: Metadata the API server (or the Job controller) adds: a new object must not carry it.
_SERVER_METADATA: Final = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "ownerReferences",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "finalizers",
    "selfLink",
)
#: Labels the Job controller puts on a Job's pod template (tied to the old Job's uid and name).
_CONTROLLER_TEMPLATE_LABELS: Final = (
    "controller-uid",
    "job-name",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
)
#: Annotations of the old Job's life that a retry must not inherit.
_NOT_INHERITED_ANNOTATIONS: Final = (
    CANCELLED_AT_ANNOTATION,
    CANCEL_REASON_ANNOTATION,
    START_AFTER_ANNOTATION,
    DEPENDS_ON_ANNOTATION,
    ADMITTED_AT_ANNOTATION,
    FAILURE_REASON_ANNOTATION,
    FAILURE_MESSAGE_ANNOTATION,
    FAILED_AT_ANNOTATION,
    "batch.kubernetes.io/job-tracking",
)


def retry_manifest(
    failed: Mapping[str, Any], *, job_id: str, retry_of: str, retry_number: int, enqueued_at: datetime
) -> dict[str, Any]:
    """A new Job that runs ``failed`` again (pure): the same spec, a new name, linked to the chain.

    ``failed`` is the failed Job as stored (API server fields included): server-set metadata,
    the status, the generated selector and the controller's template labels are dropped, so
    the API server treats it as the new object it is. The retry is created held (QUEUED) in
    the failed job's queue, so that it waits for room there like any job.
    """
    job: dict[str, Any] = _deep_copy(failed)
    job.pop("status", None)
    meta = job.setdefault("metadata", {})
    for key in _SERVER_METADATA:
        meta.pop(key, None)
    meta["name"] = job_id
    labels = meta.setdefault("labels", {})
    labels[JOB_ID_LABEL] = job_id
    labels[RETRY_OF_LABEL] = retry_of
    annotations = meta.setdefault("annotations", {})
    for key in _NOT_INHERITED_ANNOTATIONS:
        annotations.pop(key, None)
    # A retry is scheduled by the service, not by a ScheduleJob request of its own.
    annotations.pop(REQUEST_ID_ANNOTATION, None)
    annotations.pop(REQUEST_HASH_ANNOTATION, None)
    annotations[RETRY_OF_ANNOTATION] = retry_of
    annotations[RETRY_NUMBER_ANNOTATION] = str(retry_number)
    annotations[ADMISSION_ANNOTATION] = ADMISSION_STATES_BY_PHASE[JobPhase.QUEUED]
    annotations[ENQUEUED_AT_ANNOTATION] = format_precise_time(enqueued_at)
    spec = job.setdefault("spec", {})
    if not spec.get("manualSelector"):
        spec.pop("selector", None)
    template_labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
    for key in _CONTROLLER_TEMPLATE_LABELS:
        template_labels.pop(key, None)
    if JOB_ID_LABEL in template_labels:
        template_labels[JOB_ID_LABEL] = job_id
    spec["suspend"] = True
    spec.pop("parallelism", None)
    return job


#: The admission annotation's values, by the phase they report.
ADMISSION_STATES_BY_PHASE: Final[Mapping[JobPhase, str]] = {
    JobPhase.QUEUED: "queued",
    JobPhase.SCHEDULED: "scheduled",
    JobPhase.WAITING: "waiting",
}
_PHASES_BY_ADMISSION_STATE: Final = {v: k for k, v in ADMISSION_STATES_BY_PHASE.items()}


def held_phase(annotations: Mapping[str, Any]) -> JobPhase | None:
    """The phase a held (suspended, never started) job reports, from its admission annotation;
    a job from before admission states with a start time is SCHEDULED; None: not held by us."""
    state = annotations.get(ADMISSION_ANNOTATION)
    if state is not None:
        return _PHASES_BY_ADMISSION_STATE.get(str(state))
    return JobPhase.SCHEDULED if annotations.get(START_AFTER_ANNOTATION) else None


def held_message(phase: JobPhase, fields: Mapping[str, Any]) -> str:
    """What a held job's status message says it waits for."""
    if phase is JobPhase.SCHEDULED and fields.get("start_after") is not None:
        return f"Job is scheduled to start at {format_time(fields['start_after'])}"
    if phase is JobPhase.WAITING:
        return "Job is waiting for its dependencies to succeed: " + ", ".join(fields.get("depends_on") or ())
    return f"Job is queued in {fields.get('queue')!r}, waiting for room to run"


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_precise_time(value: datetime) -> str:
    """RFC 3339 with microseconds (orders submissions within a second)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def start_after(annotations: Mapping[str, Any]) -> datetime | None:
    """The start-after annotation's time (None when absent or malformed)."""
    return _annotation_time(annotations, START_AFTER_ANNOTATION)


def _annotation_time(annotations: Mapping[str, Any], key: str) -> datetime | None:
    raw = annotations.get(key)
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def record_fields(annotations: Mapping[str, Any]) -> dict[str, Any]:
    """The JobRecord fields every backend reads back from a Job's annotations: owner, request
    id and digest, the retry policy and link, and the scheduled start."""
    return {
        # Interned: many jobs share an owner, and the cache holds every job.
        "owner": sys.intern(str(annotations.get(OWNER_ANNOTATION, ""))),
        "request_id": str(annotations.get(REQUEST_ID_ANNOTATION, "")),
        "request_hash": str(annotations.get(REQUEST_HASH_ANNOTATION, "")),
        "start_after": start_after(annotations),
        **_retry_fields(annotations),
        **_admission_fields(annotations),
    }


_PRIORITIES: Final = {p.name: p for p in Priority}


def _admission_fields(annotations: Mapping[str, Any]) -> dict[str, Any]:
    """The JobRecord admission fields (queue, priority, dependencies, submit and admit times)."""
    raw_deps = str(annotations.get(DEPENDS_ON_ANNOTATION) or "")
    return {
        "queue": sys.intern(str(annotations.get(QUEUE_ANNOTATION) or DEFAULT_QUEUE)),
        "priority": _PRIORITIES.get(str(annotations.get(PRIORITY_ANNOTATION) or ""), Priority.NORMAL),
        "depends_on": tuple(d for d in raw_deps.split(",") if d),
        "enqueued_at": _annotation_time(annotations, ENQUEUED_AT_ANNOTATION),
        "admitted_at": _annotation_time(annotations, ADMITTED_AT_ANNOTATION),
    }


def held_failure(annotations: Mapping[str, Any]) -> tuple[str, str, datetime | None] | None:
    """(reason, message, when) of a held job the admission loop failed (a dependency), or None."""
    reason = annotations.get(FAILURE_REASON_ANNOTATION)
    if not reason:
        return None
    message = str(annotations.get(FAILURE_MESSAGE_ANNOTATION) or reason)
    return str(reason), message, _annotation_time(annotations, FAILED_AT_ANNOTATION)


def _retry_fields(annotations: Mapping[str, Any]) -> dict[str, Any]:
    """The JobRecord retry fields from a Job's annotations (malformed numbers read as 0)."""

    def number(key: str) -> int:
        try:
            return int(str(annotations.get(key, 0)))
        except ValueError:
            return 0

    return {
        "retry_of": str(annotations.get(RETRY_OF_ANNOTATION, "")),
        "retry_number": number(RETRY_NUMBER_ANNOTATION),
        "max_retries": number(MAX_RETRIES_ANNOTATION),
        "retry_backoff_seconds": number(RETRY_BACKOFF_ANNOTATION),
    }
