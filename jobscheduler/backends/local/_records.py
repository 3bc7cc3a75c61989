"""A stored job as the core sees it: its JobRecord (status counts, conditions, last attempt)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from jobscheduler.backends.local._store import JobRow
from jobscheduler.core.annotations import record_fields
from jobscheduler.core.manifests import JOB_NAME_ANNOTATION, JOB_TYPE_ANNOTATION
from jobscheduler.core.model import JobCondition, JobPhase, JobRecord, format_indexes

#: An attempt's reason when a podFailurePolicy FailIndex rule matched its exit code.
FAIL_INDEX_REASON: Final = "FailIndex"


#: Attempts the backend ended itself (the job failed, was cancelled or ran out of time).
_STOPPED: Final = frozenset({"Terminated", "Cancelled", "DeadlineExceeded"})


def job_record(row: JobRow) -> JobRecord:
    meta = row.manifest.get("metadata") or {}
    spec = row.manifest.get("spec") or {}
    annotations = meta.get("annotations") or {}
    phase = JobPhase(row.phase)
    failed = sum(1 for a in row.attempts if a.finished_at is not None and a.exit_code != 0 and not a.ignored)
    succeeded = sum(1 for a in row.attempts if a.exit_code == 0)
    active = sum(1 for a in row.attempts if a.finished_at is None)
    finished = [a for a in row.attempts if a.finished_at is not None]
    # A failed job reports its last failed attempt (other pods may have succeeded after it).
    # Not a pod the backend stopped itself because the job had already failed (or was cancelled).
    failures = (
        [a for a in finished if a.exit_code not in (0, None) and a.reason not in _STOPPED]
        if phase is JobPhase.FAILED
        else []
    )
    chosen = failures or finished
    last = chosen[-1] if chosen else None
    conditions: tuple[JobCondition, ...] = ()
    if phase is JobPhase.SUCCEEDED:
        conditions = (JobCondition("Complete", "True", row.reason, row.message, row.finished_at),)
    elif phase in (JobPhase.FAILED, JobPhase.CANCELLED):
        conditions = (JobCondition("Failed", "True", row.reason, row.message, row.finished_at),)
    indexes = _indexes(spec, row)
    return JobRecord.build(
        job_id=row.job_id,
        name=str(annotations.get(JOB_NAME_ANNOTATION, "")),
        type=str(annotations.get(JOB_TYPE_ANNOTATION, "")),
        namespace=row.namespace,
        phase=phase,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        message=row.message,
        reason=row.reason,
        labels=dict(meta.get("labels") or {}),
        conditions=conditions,
        active=active,
        succeeded=succeeded,
        failed=failed,
        backoff_limit=int(spec.get("backoffLimit", 6)),
        pod_names=tuple(f"{row.job_id}-{a.number}" for a in row.attempts),
        termination_reason=last.reason if last is not None else "",
        exit_code=last.exit_code if last is not None else None,
        completed_indexes=indexes[0],
        failed_indexes=indexes[1],
        **record_fields(annotations),
    )


def _indexes(spec: Mapping[str, Any], row: JobRow) -> tuple[str, str]:
    """An Indexed job's completed and failed indexes, from its attempts, as the Job controller
    reports them: an index succeeded once one of its attempts did; with backoffLimitPerIndex it
    failed when a FailIndex rule matched or its counted failures exceeded that limit."""
    if spec.get("completionMode") != "Indexed":
        return "", ""
    done = {a.completion_index for a in row.attempts if a.exit_code == 0 and a.completion_index is not None}
    failed: set[int] = set()
    per_index = spec.get("backoffLimitPerIndex")
    if isinstance(per_index, int):
        counts: dict[int, int] = {}
        for a in row.attempts:
            i = a.completion_index
            if i is None or i in done or a.finished_at is None or a.exit_code == 0 or a.ignored:
                continue
            if a.reason in _STOPPED:
                continue  # stopped by the backend once the job had failed: not the index's failure
            counts[i] = counts.get(i, 0) + 1
            if a.reason == FAIL_INDEX_REASON or counts[i] > per_index:
                failed.add(i)
    return format_indexes(done), format_indexes(failed)
