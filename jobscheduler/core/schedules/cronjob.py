"""A schedule as a batch/v1 CronJob, and back: pure functions over dicts (owned by k8s-schedules).

:func:`cronjob_manifest` turns a :class:`Schedule` and its rendered job (a batch/v1 Job manifest
from ``JobService.prepare(...).render(<placeholder id>)``) into the CronJob the Kubernetes
backend stores; :func:`schedule_from_cronjob` reads a Schedule back from it, so any replica
rebuilds every schedule from the API server alone.

The CronJob controller names each Job it makes ``<cronjob name>-<scheduled time in minutes since
the epoch>`` and copies the jobTemplate's labels and annotations, adding
``batch.kubernetes.io/cronjob-scheduled-timestamp``. So everything in the rendered job that
names the placeholder id is rewritten: metadata.name goes (the controller names the Job), the
``jobscheduler.io/job-id`` labels go (the id is the Job's name; records are built from it, pods
are found by the Job controller's ``batch.kubernetes.io/job-name`` label), and an env value that
is the id reads it through the downward API from that label (one that contains it refers to it
as ``$(JOBSCHEDULER_JOB_ID)``, Kubernetes' own expansion, in env values, command and args). The
placeholder anywhere else is refused as the caller's INVALID_ARGUMENT on ``job`` naming where (a
request may carry the placeholder's text, e.g. as a label value; the Job would carry a wrong id).

Each job is created held (``spec.suspend``, admission state ``queued``) without an
``enqueued-at`` annotation: the admission loop admits it in FIFO order by its creationTimestamp,
with its queue, priority and max_running applying.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from jobscheduler.core.errors import BackendError, InvalidArgument
from jobscheduler.core.manifests import (
    ADMISSION_ANNOTATION,
    ADMISSION_STATES_BY_PHASE,
    DEPENDS_ON_ANNOTATION,
    ENQUEUED_AT_ANNOTATION,
    JOB_ID_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    OWNER_ANNOTATION,
    REQUEST_HASH_ANNOTATION,
    REQUEST_ID_ANNOTATION,
    SCHEDULE_ANNOTATION,
    SCHEDULE_LABEL,
    SCHEDULED_AT_ANNOTATION,
    START_AFTER_ANNOTATION,
    TEMPLATE_ANNOTATION,
    TEMPLATE_VERSION_ANNOTATION,
    format_precise_time,
    parse_time,
)
from jobscheduler.core.model import JobPhase
from jobscheduler.core.naming import (
    derived_job_id,
    dns1123_label_problem,
    label_key_problem,
    label_value_problem,
)
from jobscheduler.core.podpolicy import pod_template_problems
from jobscheduler.core.requests import parse_stored_request
from jobscheduler.core.schedules.model import (
    DEFAULT_FAILED_HISTORY,
    DEFAULT_SUCCESSFUL_HISTORY,
    ConcurrencyPolicy,
    Schedule,
    ScheduleSpec,
    ScheduleStatus,
)
from jobscheduler.core.schedules.spec import MAX_STARTING_DEADLINE_SECONDS as MAX_DEADLINE

#: Job names are ``<cronjob>-<11 digits>`` and at most 63 characters: the API allows 52.
MAX_CRONJOB_NAME: Final = 52
_HASH_CHARS: Final = 10
#: A schedule name's part in the CronJob's name (then "-" and the hash): 41 + 1 + 10 = 52.
_NAME_PART: Final = MAX_CRONJOB_NAME - 1 - _HASH_CHARS
#: "" (unset) is UTC, not the kube-controller-manager's local zone (the CronJob's default).
UTC_ZONE: Final = "Etc/UTC"
#: The env variable that holds the job's id (the Job's name) where a value contains it.
JOB_ID_ENV: Final = "JOBSCHEDULER_JOB_ID"
#: Set by the Job controller on the Job's pods (Kubernetes >= 1.27): the Job's name.
JOB_NAME_POD_LABEL: Final = "batch.kubernetes.io/job-name"

DESCRIPTION_ANNOTATION: Final = "jobscheduler.io/description"
#: The schedule's own time zone ("" for UTC; spec.timeZone says Etc/UTC then).
TIME_ZONE_ANNOTATION: Final = "jobscheduler.io/time-zone"
UPDATED_AT_ANNOTATION: Final = "jobscheduler.io/updated-at"
MISSED_RUNS_ANNOTATION: Final = "jobscheduler.io/missed-runs"
LAST_MISSED_ANNOTATION: Final = "jobscheduler.io/last-missed-time"
SKIPPED_RUNS_ANNOTATION: Final = "jobscheduler.io/skipped-runs"

#: Annotations of one submission that a job made by a schedule must not inherit.
_SUBMISSION_ANNOTATIONS: Final = (
    ENQUEUED_AT_ANNOTATION,
    REQUEST_ID_ANNOTATION,
    REQUEST_HASH_ANNOTATION,
    START_AFTER_ANNOTATION,
    DEPENDS_ON_ANNOTATION,
    SCHEDULED_AT_ANNOTATION,  # the CronJob controller writes its own (record_fields reads it)
)
_MAX_COUNT_DIGITS: Final = 9


def cronjob_name(namespace: str, owner: str, name: str) -> str:
    """The CronJob's name for ``owner``'s schedule ``name``: readable, at most 52 characters, and a
    function of all three (two owners' schedules of one name never meet)."""
    digest = derived_job_id("schedule", namespace, owner, name).removeprefix("job-")
    return f"{name[:_NAME_PART].rstrip('-')}-{digest}"


def cronjob_manifest(
    schedule: Schedule, job_template: Mapping[str, Any], *, namespace: str
) -> dict[str, Any]:
    """The batch/v1 CronJob for ``schedule``, its jobs made from ``job_template`` (a rendered Job,
    named with a placeholder id). Validated: BackendError (our bug, not the caller's) if not valid;
    InvalidArgument on ``job`` if the job names the placeholder where it cannot be rewritten."""
    spec = schedule.spec
    placeholder = str((job_template.get("metadata") or {}).get("name") or "")
    template = _job_template(job_template, spec.name, placeholder)
    annotations = {
        OWNER_ANNOTATION: schedule.owner,
        SCHEDULE_ANNOTATION: spec.name,
        TIME_ZONE_ANNOTATION: spec.time_zone,
        UPDATED_AT_ANNOTATION: format_precise_time(schedule.updated_at),
        MISSED_RUNS_ANNOTATION: str(schedule.status.missed_runs),
        SKIPPED_RUNS_ANNOTATION: str(schedule.status.skipped_runs),
    }
    if spec.description:
        annotations[DESCRIPTION_ANNOTATION] = spec.description
    if spec.template:
        annotations[TEMPLATE_ANNOTATION] = spec.template
        annotations[TEMPLATE_VERSION_ANNOTATION] = str(spec.template_version)
    if schedule.status.last_missed_time is not None:
        annotations[LAST_MISSED_ANNOTATION] = format_precise_time(schedule.status.last_missed_time)
    cron_spec: dict[str, Any] = {
        "schedule": spec.cron,
        "timeZone": spec.time_zone or UTC_ZONE,
        "concurrencyPolicy": spec.concurrency_policy.value,
        "suspend": spec.suspend,
        "successfulJobsHistoryLimit": spec.successful_jobs_history_limit,
        "failedJobsHistoryLimit": spec.failed_jobs_history_limit,
        "jobTemplate": template,
    }
    if spec.starting_deadline_seconds is not None:
        cron_spec["startingDeadlineSeconds"] = spec.starting_deadline_seconds
    manifest = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": cronjob_name(namespace, schedule.owner, spec.name),
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, SCHEDULE_LABEL: spec.name},
            "annotations": annotations,
        },
        "spec": cron_spec,
    }
    if placeholder and (where := _where(template, placeholder, "spec.jobTemplate")) is not None:
        raise InvalidArgument.field(
            "job", f"contains {placeholder!r}, the job id a schedule's job is rendered with (at {where})"
        )
    validate_cronjob_manifest(manifest)
    return manifest


def _job_template(job: Mapping[str, Any], schedule_name: str, placeholder: str) -> dict[str, Any]:
    """The rendered Job as a CronJob's jobTemplate: no name, no job-id labels, the id from the
    Job's name, held for admission, naming its schedule."""
    job = json.loads(json.dumps(job))  # a deep copy, of JSON data only
    meta = job.get("metadata") or {}
    labels = {k: v for k, v in (meta.get("labels") or {}).items() if k != JOB_ID_LABEL}
    labels[SCHEDULE_LABEL] = schedule_name
    annotations = {
        k: v for k, v in (meta.get("annotations") or {}).items() if k not in _SUBMISSION_ANNOTATIONS
    }
    annotations[SCHEDULE_ANNOTATION] = schedule_name
    annotations[ADMISSION_ANNOTATION] = ADMISSION_STATES_BY_PHASE[JobPhase.QUEUED]
    spec = job.get("spec") or {}
    spec["suspend"] = True  # admitted by core.admission, as any held job
    pod = spec.get("template") or {}
    pod_labels = (pod.get("metadata") or {}).get("labels")
    if isinstance(pod_labels, dict):
        pod_labels.pop(JOB_ID_LABEL, None)
    for container in (pod.get("spec") or {}).get("containers") or ():
        _job_id_from_name(container, placeholder)
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec}


def _job_id_from_name(container: dict[str, Any], placeholder: str) -> None:
    """Env values, command and args that name the placeholder id take the Job's name instead."""
    if not placeholder:
        return
    env: list[dict[str, Any]] = container.get("env") or []
    own = {"valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{JOB_NAME_POD_LABEL}']"}}}
    rewritten: list[dict[str, Any]] = []
    needs_variable = False
    for var in env:
        value = var.get("value")
        if value == placeholder:
            var = {"name": var["name"], **own}
        elif isinstance(value, str) and placeholder in value:
            var = {**var, "value": value.replace(placeholder, f"$({JOB_ID_ENV})")}
            needs_variable = True
        rewritten.append(var)
    for key in ("command", "args"):
        words = container.get(key)
        if isinstance(words, list) and any(isinstance(w, str) and placeholder in w for w in words):
            container[key] = [
                w.replace(placeholder, f"$({JOB_ID_ENV})") if isinstance(w, str) else w for w in words
            ]
            needs_variable = True
    if needs_variable:  # first: $(VAR) refers only to variables defined before it
        rewritten.insert(0, {"name": JOB_ID_ENV, **own})
    if env or needs_variable:
        container["env"] = rewritten


def _where(value: Any, text: str, path: str) -> str | None:
    """The first path in ``value`` (JSON data) whose key or string contains ``text``, or None."""
    if isinstance(value, str):
        return path if text in value else None
    items = (
        value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, list) else ()
    )
    for key, item in items:
        inner = f"{path}[{key}]" if isinstance(key, int) or "." in key or "/" in key else f"{path}.{key}"
        if isinstance(key, str) and text in key:
            return inner
        if (found := _where(item, text, inner)) is not None:
            return found
    return None


def validate_cronjob_manifest(manifest: Mapping[str, Any]) -> None:
    """Check a CronJob before it is sent (as core.manifests.validate_job_manifest does for Jobs);
    BackendError naming what is wrong."""
    problems: list[str] = []
    if manifest.get("apiVersion") != "batch/v1" or manifest.get("kind") != "CronJob":
        problems.append("apiVersion/kind must be batch/v1 CronJob")
    meta = _mapping(manifest.get("metadata"))
    name = str(meta.get("name") or "")
    if (p := dns1123_label_problem(name)) is not None or len(name) > MAX_CRONJOB_NAME:
        problems.append(f"metadata.name {p or f'must be at most {MAX_CRONJOB_NAME} characters'}")
    spec = _mapping(manifest.get("spec"))
    if not spec.get("schedule") or "TZ" in str(spec.get("schedule")):
        problems.append("spec.schedule must be set, without TZ (spec.timeZone)")
    if spec.get("concurrencyPolicy") not in {p.value for p in ConcurrencyPolicy}:
        problems.append("spec.concurrencyPolicy must be Allow, Forbid or Replace")
    template = _mapping(spec.get("jobTemplate"))
    tmeta = _mapping(template.get("metadata"))
    for where, labels in (
        ("metadata.labels", meta.get("labels")),
        ("spec.jobTemplate.metadata.labels", tmeta.get("labels")),
    ):
        for key, value in _mapping(labels).items():
            if (p := label_key_problem(str(key)) or label_value_problem(str(value))) is not None:
                problems.append(f"{where}[{key}] {p}")
    if "name" in tmeta or JOB_ID_LABEL in _mapping(tmeta.get("labels")):
        problems.append("spec.jobTemplate.metadata must not name a job (the controller names each)")
    job_spec = _mapping(template.get("spec"))
    if job_spec.get("suspend") is not True:
        problems.append("spec.jobTemplate.spec.suspend must be true (jobs are admitted by the service)")
    pod = _mapping(job_spec.get("template"))
    problems.extend(f"spec.jobTemplate.{p}" for p in pod_template_problems(pod))
    if problems:
        raise BackendError("invalid CronJob manifest: " + "; ".join(problems))


def schedule_from_cronjob(cronjob: Mapping[str, Any]) -> Schedule:
    """The Schedule a CronJob of ours holds (spec from its spec and annotations, the job from the
    request stored on its jobTemplate, status from the controller's status and our counters).
    InvalidArgument (from the stored request) if it was edited into something that is not ours."""
    meta = _mapping(cronjob.get("metadata"))
    annotations = _mapping(meta.get("annotations"))
    spec = _mapping(cronjob.get("spec"))
    status = _mapping(cronjob.get("status"))
    template = _mapping(spec.get("jobTemplate"))
    job = parse_stored_request(_mapping(_mapping(template.get("metadata")).get("annotations")))
    zone = str(spec.get("timeZone") or "")
    if zone == UTC_ZONE and annotations.get(TIME_ZONE_ANNOTATION) == "":
        zone = ""
    created = parse_time(meta.get("creationTimestamp")) or datetime.fromtimestamp(0, UTC)
    policy = {p.value: p for p in ConcurrencyPolicy}.get(
        str(spec.get("concurrencyPolicy")), ConcurrencyPolicy.ALLOW
    )
    deadline = spec.get("startingDeadlineSeconds")
    return Schedule(
        spec=ScheduleSpec(
            name=str(annotations.get(SCHEDULE_ANNOTATION) or ""),
            cron=str(spec.get("schedule") or ""),
            job=job,
            time_zone=zone,
            concurrency_policy=policy,
            # The API allows any int64; a deadline over a year (or an edited non-number) means none.
            starting_deadline_seconds=seconds
            if 0 <= (seconds := _int(deadline, -1)) <= MAX_DEADLINE
            else None,
            suspend=spec.get("suspend") is True,
            successful_jobs_history_limit=_int(
                spec.get("successfulJobsHistoryLimit"), DEFAULT_SUCCESSFUL_HISTORY
            ),
            failed_jobs_history_limit=_int(spec.get("failedJobsHistoryLimit"), DEFAULT_FAILED_HISTORY),
            description=str(annotations.get(DESCRIPTION_ANNOTATION) or ""),
            template=str(annotations.get(TEMPLATE_ANNOTATION) or ""),
            template_version=_count(annotations.get(TEMPLATE_VERSION_ANNOTATION)),
        ),
        owner=str(annotations.get(OWNER_ANNOTATION) or ""),
        created_at=created,
        updated_at=parse_time(annotations.get(UPDATED_AT_ANNOTATION)) or created,
        status=ScheduleStatus(
            last_schedule_time=parse_time(status.get("lastScheduleTime")),
            last_successful_time=parse_time(status.get("lastSuccessfulTime")),
            missed_runs=_count(annotations.get(MISSED_RUNS_ANNOTATION)),
            last_missed_time=parse_time(annotations.get(LAST_MISSED_ANNOTATION)),
            skipped_runs=_count(annotations.get(SKIPPED_RUNS_ANNOTATION)),
        ),
    )


def active_job_names(cronjob: Mapping[str, Any]) -> tuple[str, ...]:
    """The Jobs the controller counts as active (status.active), by name (= job id)."""
    refs = _mapping(cronjob.get("status")).get("active") or ()
    return tuple(str(r["name"]) for r in refs if isinstance(r, Mapping) and r.get("name"))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any, default: int) -> int:
    """A non-negative int, else ``default``."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else default


def _count(value: Any) -> int:
    raw = str(value or "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= _MAX_COUNT_DIGITS else 0
