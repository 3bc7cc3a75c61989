"""A Job's annotations read back into JobRecord fields (every backend), and a job's origin
written as labels and annotations. The names themselves are declared in core.manifests."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from jobscheduler.core.manifests import (
    ADMISSION_ANNOTATION,
    ADMISSION_STATES_BY_PHASE,
    ADMITTED_AT_ANNOTATION,
    CRONJOB_SCHEDULED_ANNOTATION,
    DEPENDS_ON_ANNOTATION,
    ENQUEUED_AT_ANNOTATION,
    FAILED_AT_ANNOTATION,
    FAILURE_MESSAGE_ANNOTATION,
    FAILURE_REASON_ANNOTATION,
    MAX_RETRIES_ANNOTATION,
    OWNER_ANNOTATION,
    PRIORITY_ANNOTATION,
    QUEUE_ANNOTATION,
    REQUEST_HASH_ANNOTATION,
    REQUEST_ID_ANNOTATION,
    RERUN_OF_ANNOTATION,
    RERUN_OF_LABEL,
    RETRY_BACKOFF_ANNOTATION,
    RETRY_NUMBER_ANNOTATION,
    RETRY_OF_ANNOTATION,
    SCHEDULE_ANNOTATION,
    SCHEDULE_LABEL,
    SCHEDULED_AT_ANNOTATION,
    START_AFTER_ANNOTATION,
    TEMPLATE_ANNOTATION,
    TEMPLATE_LABEL,
    TEMPLATE_VERSION_ANNOTATION,
    format_time,
    parse_time,
)
from jobscheduler.core.model import DEFAULT_QUEUE, JobOrigin, JobPhase, Priority

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


def start_after(annotations: Mapping[str, Any]) -> datetime | None:
    """The start-after annotation's time (None when absent or malformed)."""
    return _annotation_time(annotations, START_AFTER_ANNOTATION)


def _annotation_time(annotations: Mapping[str, Any], key: str) -> datetime | None:
    return parse_time(annotations.get(key))


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
        **_origin_fields(annotations),
    }


def origin_metadata(origin: JobOrigin) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations) that record ``origin`` on a Job; read back by record_fields."""
    labels: dict[str, str] = {}
    annotations: dict[str, str] = {}
    if origin.schedule:
        labels[SCHEDULE_LABEL] = annotations[SCHEDULE_ANNOTATION] = origin.schedule
    if origin.scheduled_at is not None:
        annotations[SCHEDULED_AT_ANNOTATION] = format_time(origin.scheduled_at)
    if origin.template:
        labels[TEMPLATE_LABEL] = annotations[TEMPLATE_ANNOTATION] = origin.template
        annotations[TEMPLATE_VERSION_ANNOTATION] = str(origin.template_version)
    if origin.rerun_of:
        labels[RERUN_OF_LABEL] = annotations[RERUN_OF_ANNOTATION] = origin.rerun_of
    return labels, annotations


def _origin_fields(annotations: Mapping[str, Any]) -> dict[str, Any]:
    """Where the job came from: its schedule (and when it was due), template, rerun link."""
    return {
        "schedule": sys.intern(str(annotations.get(SCHEDULE_ANNOTATION, ""))),
        "scheduled_at": _annotation_time(annotations, SCHEDULED_AT_ANNOTATION)
        or _annotation_time(annotations, CRONJOB_SCHEDULED_ANNOTATION),
        "template": sys.intern(str(annotations.get(TEMPLATE_ANNOTATION, ""))),
        "template_version": _number(annotations, TEMPLATE_VERSION_ANNOTATION),
        "rerun_of": str(annotations.get(RERUN_OF_ANNOTATION, "")),
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


_MAX_NUMBER_DIGITS: Final = 9


def _retry_fields(annotations: Mapping[str, Any]) -> dict[str, Any]:
    """The JobRecord retry fields from a Job's annotations (malformed numbers read as 0)."""
    return {
        "retry_of": str(annotations.get(RETRY_OF_ANNOTATION, "")),
        "retry_number": _number(annotations, RETRY_NUMBER_ANNOTATION),
        "max_retries": _number(annotations, MAX_RETRIES_ANNOTATION),
        "retry_backoff_seconds": _number(annotations, RETRY_BACKOFF_ANNOTATION),
    }


def _number(annotations: Mapping[str, Any], key: str) -> int:
    """A small non-negative number (malformed: 0)."""
    raw = str(annotations.get(key, ""))
    # ASCII digits only, and few of them: int() would take "-3", "1_0", "١٢" and 4,000 digits.
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= _MAX_NUMBER_DIGITS else 0
