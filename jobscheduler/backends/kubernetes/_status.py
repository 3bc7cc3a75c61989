"""A batch/v1 Job (as JSON) -> a compact JobRecord, from its conditions and counts, never guessed."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from jobscheduler.core.annotations import held_failure, held_message, held_phase, record_fields
from jobscheduler.core.conditions import compact_conditions
from jobscheduler.core.manifests import (
    CANCEL_REASON_ANNOTATION,
    CANCELLED_AT_ANNOTATION,
    JOB_ID_LABEL,
    JOB_NAME_ANNOTATION,
    JOB_NAME_LABEL,
    JOB_TYPE_ANNOTATION,
    JOB_TYPE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    parse_time,
)
from jobscheduler.core.model import JobCondition, JobPhase, JobRecord
from jobscheduler.core.schedules.cronjob import JOB_NAME_POD_LABEL
from jobscheduler.logs import get_logger

log = get_logger("jobscheduler.backends.kubernetes")

_SUCCESS_CONDITIONS = ("Complete", "SuccessCriteriaMet")
_FAILURE_CONDITIONS = ("Failed", "FailureTarget")


def is_managed(job: Mapping[str, Any]) -> bool:
    labels = (job.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(MANAGED_BY_LABEL) == MANAGED_BY)


#: How much of a malformed time a warning quotes.
_MAX_TIME_CHARS = 64
#: (job, annotation, value) already warned about, so a bad annotation is logged once, not per event.
_WARNED: set[tuple[str, str, str]] = set()
_MAX_WARNED = 1000


def annotation_time(job_id: str, annotations: Mapping[str, Any], key: str) -> datetime | None:
    """``parse_time`` of an annotation anybody with write access may have set by hand: a
    malformed value is ignored (as absent) and logged once."""
    raw = annotations.get(key)
    parsed = parse_time(raw)
    if parsed is None and raw:
        warned = (job_id, key, str(raw)[:_MAX_TIME_CHARS])
        if warned not in _WARNED:
            if len(_WARNED) >= _MAX_WARNED:
                _WARNED.clear()
            _WARNED.add(warned)
            log.warning("malformed annotation ignored", job_id=job_id, annotation=key, value=warned[2])
    return parsed


def _shared(value: str) -> str:
    """One copy of a string many cached jobs repeat (condition words, messages, reasons)."""
    return sys.intern(value) if len(value) <= _MAX_SHARED_CHARS else value


#: Longer strings are not interned (a message that long is one job's own).
_MAX_SHARED_CHARS: Final = 256


def job_record(job: Mapping[str, Any]) -> JobRecord:
    meta = job.get("metadata") or {}
    spec = job.get("spec") or {}
    status = job.get("status") or {}
    labels: Mapping[str, str] = meta.get("labels") or {}
    annotations: Mapping[str, str] = meta.get("annotations") or {}
    # The same time often appears several times in one Job (a condition's transition, the
    # completion time): one datetime for each (48 bytes each, in every cached record).
    times: dict[Any, datetime | None] = {}

    def when(value: Any) -> datetime | None:
        if not isinstance(value, str):
            return None
        if value not in times:
            times[value] = parse_time(value)
        return times[value]

    conditions = tuple(
        JobCondition(
            type=_shared(str(c.get("type", ""))),
            status=_shared(str(c.get("status", ""))),
            reason=_shared(str(c.get("reason") or "")),
            message=_shared(str(c.get("message") or "")),
            last_transition_time=when(c.get("lastTransitionTime")),
        )
        for c in status.get("conditions") or ()
        if isinstance(c, Mapping)
    )
    true = {c.type: c for c in conditions if c.status == "True"}
    active = int(status.get("active") or 0)
    succeeded = int(status.get("succeeded") or 0)
    failed = int(status.get("failed") or 0)
    raw_limit = spec.get("backoffLimit")
    backoff_limit = int(raw_limit) if raw_limit is not None else 6  # the API's default
    started_at = when(status.get("startTime"))
    finished_at: datetime | None = None
    reason = ""
    success = next((true[t] for t in _SUCCESS_CONDITIONS if t in true), None)
    failure = next((true[t] for t in _FAILURE_CONDITIONS if t in true), None)
    cancelled_at = annotation_time(str(meta.get("name", "")), annotations, CANCELLED_AT_ANNOTATION)
    from_annotations = record_fields(annotations)
    held = held_phase(annotations) if spec.get("suspend") and started_at is None else None
    failed_held = held_failure(annotations)

    if success is not None:
        phase = JobPhase.SUCCEEDED
        finished_at = when(status.get("completionTime")) or success.last_transition_time
        reason = success.reason or "Completed"
        message = success.message or f"Job completed: {succeeded} pod(s) succeeded"
    elif cancelled_at is not None:
        phase = JobPhase.CANCELLED
        reason = "Cancelled"
        finished_at = failure.last_transition_time if failure is not None else cancelled_at
        why = annotations.get(CANCEL_REASON_ANNOTATION) or "cancelled by request"
        message = f"Job cancelled: {why}"
        if active:
            message += f" ({active} pod(s) terminating)"
    elif failed_held is not None:
        # Failed by the admission loop before it ran (a dependency failed or does not exist).
        phase = JobPhase.FAILED
        reason, message, failed_at = failed_held
        finished_at = failure.last_transition_time if failure is not None else failed_at
    elif failure is not None:
        phase = JobPhase.FAILED
        finished_at = failure.last_transition_time
        reason = failure.reason or "Failed"
        message = failure.message or f"Job failed: {failed} pod(s) failed"
    elif held is not None:
        phase = held
        message = held_message(held, from_annotations)
    elif spec.get("suspend") or ("Suspended" in true):
        phase = JobPhase.PENDING
        message = "Job is suspended"
    elif active:
        phase = JobPhase.RUNNING
        ready = int(status.get("ready") or 0)
        message = f"{active} pod(s) active, {ready} ready"
        if failed:
            message += f"; {failed} failed attempt(s) of {backoff_limit + 1} allowed"
    else:
        phase = JobPhase.PENDING
        message = "Job created; waiting for its pod to start"
        if failed:
            message = f"{failed} failed attempt(s); retrying (backoff limit {backoff_limit})"

    name = str(annotations.get(JOB_NAME_ANNOTATION) or labels.get(JOB_NAME_LABEL) or "")
    job_id = str(meta.get("name", ""))
    for key in ("queue", "schedule", "template"):
        if isinstance(value := from_annotations.get(key), str):
            from_annotations[key] = _shared(value)
    if from_annotations["enqueued_at"] is None and from_annotations["schedule"]:
        # A Job a schedule's CronJob made was submitted when the controller created it.
        from_annotations["enqueued_at"] = when(meta.get("creationTimestamp"))
    return JobRecord.build(
        job_id=job_id,
        name=name,
        type=_shared(annotations.get(JOB_TYPE_ANNOTATION) or labels.get(JOB_TYPE_LABEL) or ""),
        namespace=_shared(str(meta.get("namespace", ""))),
        phase=phase,
        created_at=when(meta.get("creationTimestamp")),
        started_at=started_at,
        finished_at=finished_at,
        message=_shared(message),
        reason=_shared(reason),
        labels={_shared(str(k)): str(v) for k, v in labels.items()},
        conditions=compact_conditions(conditions),
        active=active,
        succeeded=succeeded,
        failed=failed,
        backoff_limit=backoff_limit,
        completed_indexes=_indexes(status.get("completedIndexes")),
        failed_indexes=_indexes(status.get("failedIndexes")),
        version=_version(meta.get("resourceVersion")),
        **from_annotations,
    )


def _version(value: Any) -> int | str:
    """metadata.resourceVersion: an int when it is a plain decimal number (one 28-byte int per
    cached job instead of the string), else as the API server wrote it (opaque)."""
    version = str(value or "")
    return int(version) if version.isdigit() and str(int(version)) == version else version


_MAX_INDEXES_CHARS: Final = 2048
_INDEX_CHARS: Final = frozenset("0123456789,-")


def _indexes(value: Any) -> str:
    """An Indexed Job's status.completedIndexes / failedIndexes ("0-2,5"); anything else, or
    more than 2048 characters (a Job has at most 100000 completions), reads as none."""
    if not isinstance(value, str) or len(value) > _MAX_INDEXES_CHARS or not set(value) <= _INDEX_CHARS:
        return ""
    return value


@dataclass(frozen=True, slots=True)
class PodSummary:
    """What a job's record needs of one of its pods."""

    name: str
    job_id: str
    created: str
    terminated_reason: str = ""
    exit_code: int | None = None
    finished: str = ""


def pod_summary(pod: Mapping[str, Any]) -> PodSummary | None:
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    # A Job made by a schedule's CronJob has no job-id label (its template could not know the
    # name the controller gives it); the Job controller labels its pods with the Job's name.
    job_id = labels.get(JOB_ID_LABEL) or labels.get(JOB_NAME_POD_LABEL)
    if not job_id:
        return None
    reason, exit_code, finished = "", None, ""
    for status in (pod.get("status") or {}).get("containerStatuses") or ():
        for key in ("state", "lastState"):
            terminated = ((status or {}).get(key) or {}).get("terminated")
            if terminated:
                reason = str(terminated.get("reason") or "")
                exit_code = terminated.get("exitCode")
                finished = str(terminated.get("finishedAt") or "")
                break
    return PodSummary(
        name=str(meta.get("name", "")),
        job_id=str(job_id),
        created=str(meta.get("creationTimestamp") or ""),
        terminated_reason=reason,
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        finished=finished,
    )


def with_pods(record: JobRecord, pods: Iterable[PodSummary]) -> JobRecord:
    """The record with its pods' names and the last terminated container's reason and exit code."""
    ordered = sorted(pods, key=lambda p: (p.created, p.name))
    if not ordered and not record.pod_names:
        return record  # the common case on create: nothing to add
    terminated = [p for p in ordered if p.exit_code is not None]
    last = max(terminated, key=lambda p: (p.finished, p.created)) if terminated else None
    return replace(
        record,
        pod_names=tuple(p.name for p in ordered),
        termination_reason=last.terminated_reason if last else "",
        exit_code=last.exit_code if last else None,
    )
