"""Batch/v1 Job manifests, built by pure functions over dicts, and their validation.

Every job type renders through :func:`job_manifest`, so every Job this
service creates carries the labels it is found by and the restricted
security context.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from jobscheduler.core.errors import BackendError
from jobscheduler.core.limits import ImagePolicy
from jobscheduler.core.model import JobPhase
from jobscheduler.core.naming import dns1123_label_problem, label_key_problem, label_value_problem
from jobscheduler.core.podpolicy import RESTRICTED_CONTAINER_SECURITY_CONTEXT, pod_template_problems

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
#: The request's work as canonical JSON (core.requests): what a retry is rendered from.
REQUEST_ANNOTATION: Final = "jobscheduler.io/request"
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
#: Where a job came from (also labels, for selectors): the schedule that made it and the time
#: it was due (Kubernetes' CronJob controller writes its own annotation for that), the job
#: template and version it was made from, the job it reruns.
SCHEDULE_ANNOTATION: Final = "jobscheduler.io/schedule"
SCHEDULE_LABEL: Final = "jobscheduler.io/schedule"
SCHEDULED_AT_ANNOTATION: Final = "jobscheduler.io/scheduled-at"
CRONJOB_SCHEDULED_ANNOTATION: Final = "batch.kubernetes.io/cronjob-scheduled-timestamp"
TEMPLATE_ANNOTATION: Final = "jobscheduler.io/template"
TEMPLATE_LABEL: Final = "jobscheduler.io/template"
TEMPLATE_VERSION_ANNOTATION: Final = "jobscheduler.io/template-version"
RERUN_OF_ANNOTATION: Final = "jobscheduler.io/rerun-of"
RERUN_OF_LABEL: Final = "jobscheduler.io/rerun-of"

#: The label selector that finds every Job this service manages.
MANAGED_SELECTOR: Final = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
#: Label keys (and the prefix) callers may not set themselves.
RESERVED_LABEL_PREFIX: Final = "jobscheduler.io/"
RESERVED_LABELS: Final = frozenset({MANAGED_BY_LABEL})

_NOTHING: Final[Mapping[str, Any]] = MappingProxyType({})
_FAIL_JOB: Final = "FailJob"

#: The UID/GID job containers run as (the project image's user), so that images
#: without a numeric USER still satisfy runAsNonRoot.
JOB_RUN_AS_USER: Final = 10001


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
    secret_env: Mapping[str, tuple[str, str]] = _NOTHING,
    active_deadline_seconds: int | None = None,
    backoff_limit: int | None = None,
    permanent_exit_codes: Sequence[int] = (),
    resources: Mapping[str, str] = _NOTHING,
    parallelism: int | None = None,
    completions: int | None = None,
    completion_mode: str | None = None,
    backoff_limit_per_index: int | None = None,
    exit_code_rules: Sequence[tuple[str, Sequence[int]]] = (),
) -> dict[str, Any]:
    """The batch/v1 Job for one job of any type (pure: same input, same dict).

    ``secret_env``: variable -> (Secret name, key), rendered as ``valueFrom.secretKeyRef`` (the
    value never passes through here). ``resources``: per-job overrides of the defaults, keys
    ``cpu_request``, ``memory_request``, ``cpu_limit``, ``memory_limit`` (bounded by the handler).
    ``exit_code_rules``: (FailJob | Ignore | FailIndex, exit codes), after ``permanent_exit_codes``
    (FailJob), as ``podFailurePolicy`` rules. ``completion_mode``: NonIndexed or Indexed.
    """
    d = ctx.defaults
    res = {"cpu_request": d.cpu_request, "memory_request": d.memory_request}
    res |= {"cpu_limit": d.cpu_limit, "memory_limit": d.memory_limit, **resources}
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
                        "env": [{"name": k, "value": v} for k, v in (env or {}).items()]
                        + [
                            {"name": k, "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}
                            for k, (name, key) in secret_env.items()
                        ],
                        "resources": {
                            "requests": {"cpu": res["cpu_request"], "memory": res["memory_request"]},
                            "limits": {"cpu": res["cpu_limit"], "memory": res["memory_limit"]},
                        },
                        "securityContext": _deep_copy(RESTRICTED_CONTAINER_SECURITY_CONTEXT),
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }
                ],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
            },
        },
    }
    if active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = active_deadline_seconds
    for key, value in (
        ("parallelism", parallelism),
        ("completions", completions),
        ("completionMode", completion_mode),
        ("backoffLimitPerIndex", backoff_limit_per_index),
    ):
        if value is not None:
            spec[key] = value
    if backoff_limit_per_index is not None and backoff_limit is None:
        del spec["backoffLimit"]  # per index instead: the Job's own limit is then unbounded
    rules = [(_FAIL_JOB, permanent_exit_codes)] if permanent_exit_codes else []
    if rules or exit_code_rules:
        # Exit codes that mean "retrying cannot help" fail the Job at once (reason
        # PodFailurePolicy); evictions and other disruptions do not count as failures.
        spec["podFailurePolicy"] = {
            "rules": [
                {
                    "action": action,
                    "onExitCodes": {
                        "containerName": ctx.job_type,
                        "operator": "In",
                        "values": sorted(set(codes)),
                    },
                }
                for action, codes in (*rules, *exit_code_rules)
            ]
            + [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
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


def validate_job_manifest(
    manifest: Mapping[str, Any],
    *,
    images: ImagePolicy | None = None,
    trusted_images: Collection[str] = (),
) -> None:
    """Check a manifest before it is sent: a handler bug must not become a cluster object, nor
    may any Job we create ask more of a node than the pod policy (core.podpolicy) allows.
    ``images``: ALLOWED_IMAGES (None: any); ``trusted_images``: the handlers' configured images.

    Raises :class:`BackendError` (an internal error, not the caller's) naming what is wrong.
    """
    problems: list[str] = []
    if manifest.get("apiVersion") != "batch/v1" or manifest.get("kind") != "Job":
        problems.append("apiVersion/kind must be batch/v1 Job")
    meta = _mapping(manifest.get("metadata"))
    name = meta.get("name", "")
    if not isinstance(name, str) or (p := dns1123_label_problem(name)) is not None:
        problems.append(f"metadata.name {p if isinstance(name, str) else 'must be a string'}")
    labels = _mapping(meta.get("labels"))
    for key in (MANAGED_BY_LABEL, JOB_ID_LABEL, JOB_TYPE_LABEL):
        if key not in labels:
            problems.append(f"metadata.labels lacks {key}")
    for key, value in labels.items():
        if (p := label_key_problem(str(key))) is not None or (
            p := label_value_problem(str(value))
        ) is not None:
            problems.append(f"metadata.labels[{key}] {p}")
    template = _mapping(_mapping(manifest.get("spec")).get("template"))
    problems.extend(pod_template_problems(template, images=images, trusted_images=trusted_images))
    if problems:
        raise BackendError("invalid Job manifest: " + "; ".join(problems))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


#: The admission annotation's values, by the phase they report.
ADMISSION_STATES_BY_PHASE: Final[Mapping[JobPhase, str]] = {
    JobPhase.QUEUED: "queued",
    JobPhase.SCHEDULED: "scheduled",
    JobPhase.WAITING: "waiting",
}


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_precise_time(value: datetime) -> str:
    """RFC 3339 with microseconds (orders submissions within a second)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


#: An RFC 3339 time is ~30 characters; anything much longer is not one (and is not parsed).
_MAX_TIME_CHARS: Final = 64


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as an aware UTC datetime; None if absent or malformed: not a string,
    no time zone (e.g. "20261127"), or out of range in UTC (year 1 at +01:00, year 9999 at -01:00)."""
    if not isinstance(value, str) or not value or len(value) > _MAX_TIME_CHARS:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.astimezone(UTC) if parsed.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None
