"""A schedule's spec and status as JSON text, for stores (SQLite rows, CronJob annotations).

The job is kept as JobService keeps a job's request (core.requests.stored_request: the canonical
fields of the work), plus the template name and version.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

from jobscheduler.core.errors import BackendError, InvalidArgument
from jobscheduler.core.manifests import REQUEST_ANNOTATION, parse_time
from jobscheduler.core.model import ScheduleRequest
from jobscheduler.core.requests import parse_stored_request, stored_request
from jobscheduler.core.schedules.model import ConcurrencyPolicy, ScheduleSpec, ScheduleStatus
from jobscheduler.core.schedules.spec import MAX_HISTORY_LIMIT

_MAX_INT32: Final = 2**31 - 1
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
        job = replace(job, template=str(data["template"]), template_version=_count(data["template_version"]))
        spec = ScheduleSpec(
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
            template_version=_count(data["spec_template_version"]),
        )
        _check_numbers(spec)
        return spec
    except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
        raise BackendError(f"a stored schedule cannot be read: {exc}") from None


def _count(value: Any) -> int:
    """A stored count or version: an int that fits the API's int32 (ValueError otherwise)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_INT32:
        raise ValueError(f"{value!r} is not a count")
    return value


def _check_numbers(spec: ScheduleSpec) -> None:
    """ValueError for numbers no request could have stored (a hand-edited row)."""
    deadline = spec.starting_deadline_seconds
    if deadline is not None:
        _count(deadline)
    for field in ("successful_jobs_history_limit", "failed_jobs_history_limit"):
        if not 0 <= _count(getattr(spec, field)) <= MAX_HISTORY_LIMIT:
            raise ValueError(f"{field} {getattr(spec, field)} is out of range")


def aware_time(text: Any) -> datetime:
    """A stored time with its UTC offset, in range in UTC (ValueError otherwise: a naive time would
    not compare with the loop's clock, one out of range cannot be answered)."""
    parsed = parse_time(text)
    if parsed is None:
        raise ValueError(f"{text!r} is not a time with a UTC offset")
    return parsed


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
        times = {n: aware_time(data[n]) if data.get(n) else None for n in _STATUS_TIMES}
        return ScheduleStatus(
            missed_runs=_count(data["missed_runs"]), skipped_runs=_count(data["skipped_runs"]), **times
        )
    except (ValueError, KeyError, TypeError, OverflowError) as exc:
        raise BackendError(f"a stored schedule status cannot be read: {exc}") from None
