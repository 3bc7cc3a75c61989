"""A schedule's spec and status as JSON text, for stores (SQLite rows, CronJob annotations).

The job is kept as JobService keeps a job's request (core.requests.stored_request: the canonical
fields of the work), plus the template name and version.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Any

from jobscheduler.core.errors import BackendError, InvalidArgument
from jobscheduler.core.manifests import REQUEST_ANNOTATION
from jobscheduler.core.model import ScheduleRequest
from jobscheduler.core.requests import parse_stored_request, stored_request
from jobscheduler.core.schedules.model import ConcurrencyPolicy, ScheduleSpec, ScheduleStatus

_STATUS_TIMES = ("last_schedule_time", "last_successful_time", "last_missed_time", "handled_until")


def spec_to_json(spec: ScheduleSpec) -> str:
    return json.dumps(
        {
            "name": spec.name,
            "cron": spec.cron,
            "time_zone": spec.time_zone,
            "job": stored_request(spec.job),
            "template": spec.job.template,
            "template_version": spec.job.template_version,
            "concurrency_policy": spec.concurrency_policy.value,
            "starting_deadline_seconds": spec.starting_deadline_seconds,
            "suspend": spec.suspend,
            "successful_jobs_history_limit": spec.successful_jobs_history_limit,
            "failed_jobs_history_limit": spec.failed_jobs_history_limit,
            "description": spec.description,
            "spec_template": spec.template,
            "spec_template_version": spec.template_version,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def spec_from_json(raw: str) -> ScheduleSpec:
    """BackendError if the text is not a stored spec (the store is ours: a bug or a damaged file)."""
    try:
        data: dict[str, Any] = json.loads(raw)
        job = _job(data["job"])
        job = replace(job, template=str(data["template"]), template_version=int(data["template_version"]))
        return ScheduleSpec(
            name=str(data["name"]),
            cron=str(data["cron"]),
            job=job,
            time_zone=str(data["time_zone"]),
            concurrency_policy=ConcurrencyPolicy(data["concurrency_policy"]),
            starting_deadline_seconds=data["starting_deadline_seconds"],
            suspend=bool(data["suspend"]),
            successful_jobs_history_limit=int(data["successful_jobs_history_limit"]),
            failed_jobs_history_limit=int(data["failed_jobs_history_limit"]),
            description=str(data["description"]),
            template=str(data["spec_template"]),
            template_version=int(data["spec_template_version"]),
        )
    except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
        raise BackendError(f"a stored schedule cannot be read: {exc}") from None


def _job(raw: str) -> ScheduleRequest:
    """The stored job; one naming a template may leave the job type to it (job_field None)."""
    body = json.loads(raw)
    partial = isinstance(body, dict) and body.get("job_field") is None
    if partial:
        body["job_field"] = ""
    job = parse_stored_request({REQUEST_ANNOTATION: json.dumps(body)})
    return replace(job, job_field=None) if partial else job


def status_to_json(status: ScheduleStatus) -> str:
    data: dict[str, Any] = {"missed_runs": status.missed_runs, "skipped_runs": status.skipped_runs}
    for name in _STATUS_TIMES:
        value = getattr(status, name)
        data[name] = value.isoformat() if value is not None else None
    return json.dumps(data, separators=(",", ":"))


def status_from_json(raw: str) -> ScheduleStatus:
    try:
        data: dict[str, Any] = json.loads(raw)
        times = {n: datetime.fromisoformat(data[n]) if data.get(n) else None for n in _STATUS_TIMES}
        return ScheduleStatus(
            missed_runs=int(data["missed_runs"]), skipped_runs=int(data["skipped_runs"]), **times
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise BackendError(f"a stored schedule status cannot be read: {exc}") from None
