"""The schedule, template and rerun calls, built once for both clients: each builder checks its
arguments, makes the request and says which RPC takes it, whether a retry after UNAVAILABLE is
safe, and how the answer becomes the client's value types."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypedDict, TypeVar, Unpack

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.client import _convert as convert
from jobscheduler.client._requests import job_request, request_message
from jobscheduler.client._types import (
    ConcurrencyPolicy,
    Job,
    JobRequest,
    JobSpec,
    JobTemplate,
    Priority,
    Schedule,
    ScheduleDeletion,
)

_T = TypeVar("_T")
_POLICY_PREFIX = "CONCURRENCY_POLICY_"
_POLICIES = {
    v: convert.enum_member(ConcurrencyPolicy, pb.ConcurrencyPolicy.Name(v), _POLICY_PREFIX)
    for v in pb.ConcurrencyPolicy.values()
}


@dataclasses.dataclass(frozen=True, slots=True)
class Call(Generic[_T]):
    """One unary call: the stub's method name, the request, the answer's conversion."""

    rpc: str
    request: Any
    result: Callable[[Any], _T]
    #: Whether UNAVAILABLE may be retried (the call is a read, idempotent, or has a request_id).
    retry: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Page(Generic[_T]):
    items: tuple[_T, ...]
    next_page_token: str


class JobOptions(TypedDict, total=False):
    """``schedule``'s optional arguments: ScheduleJobRequest's fields (see the proto)."""

    labels: Mapping[str, str] | None
    #: A Priority or its name, any case (default NORMAL).
    priority: Priority | str | None
    queue: str
    #: Start no earlier than this (timezone-aware), or this many seconds from now.
    start_after: datetime.datetime | None
    delay_seconds: int
    depends_on: Sequence[str]
    max_retries: int
    retry_backoff_seconds: int
    timeout_seconds: int
    ttl_seconds_after_finished: int | None
    #: Start from this job template (and version; 0: the latest); the other fields override it.
    template: str
    template_version: int
    #: The idempotency key (default: a new one, so retries after UNAVAILABLE make one job).
    request_id: str | None


class _Settings(TypedDict, total=False):
    #: An IANA time zone, e.g. "Europe/Berlin" (default UTC).
    time_zone: str
    #: ALLOW (the default), FORBID or REPLACE (a ConcurrencyPolicy or its name, any case).
    concurrency_policy: ConcurrencyPolicy | str
    #: No runs while set (trigger_schedule still makes one).
    suspend: bool
    #: How many finished jobs are kept (default 3 succeeded, 1 failed).
    successful_jobs_history_limit: int
    failed_jobs_history_limit: int
    description: str


class ScheduleOptions(_Settings, total=False):
    """``create_schedule``'s optional settings (the Schedule message's fields)."""

    #: A run missed by more than this many seconds is skipped and counted as missed.
    starting_deadline_seconds: int


class ScheduleChanges(_Settings, total=False):
    """``update_schedule``'s changes: only the given keys change; ``job`` replaces the job the
    schedule makes; ``starting_deadline_seconds=None`` removes the deadline."""

    cron: str
    job: JobRequest
    starting_deadline_seconds: int | None


def policy_value(policy: ConcurrencyPolicy | str) -> int:
    return convert.member_value(policy, "concurrency_policy", pb.ConcurrencyPolicy, _POLICY_PREFIX)


def schedule_of(m: pb.Schedule) -> Schedule:
    def limit(field: str) -> int | None:
        value: int = getattr(m, field)
        return value if m.HasField(field) else None  # type: ignore[arg-type]

    return Schedule(
        name=m.name,
        cron=m.cron,
        job=job_request(m.job),
        time_zone=m.time_zone,
        concurrency_policy=_POLICIES.get(m.concurrency_policy, ConcurrencyPolicy.UNSPECIFIED),
        starting_deadline_seconds=limit("starting_deadline_seconds"),
        suspend=m.suspend,
        successful_jobs_history_limit=limit("successful_jobs_history_limit"),
        failed_jobs_history_limit=limit("failed_jobs_history_limit"),
        description=m.description,
        owner=m.owner,
        created_at=convert.time_of(m, "created_at"),
        updated_at=convert.time_of(m, "updated_at"),
        last_schedule_time=convert.time_of(m, "last_schedule_time"),
        last_successful_time=convert.time_of(m, "last_successful_time"),
        next_run_time=convert.time_of(m, "next_run_time"),
        active_job_ids=tuple(m.active_job_ids),
        missed_runs=m.missed_runs,
        last_missed_time=convert.time_of(m, "last_missed_time"),
        skipped_runs=m.skipped_runs,
        template_version=m.template_version,
    )


def template_of(m: pb.JobTemplate) -> JobTemplate:
    return JobTemplate(
        name=m.name,
        job=job_request(m.job),
        description=m.description,
        version=m.version,
        owner=m.owner,
        created_at=convert.time_of(m, "created_at"),
        first_created_at=convert.time_of(m, "first_created_at"),
    )


def _job_of(m: Any) -> Job:
    return convert.job(m.job)


def _set_options(request: Any, options: ScheduleOptions | ScheduleChanges) -> None:
    for key, value in options.items():
        if key == "concurrency_policy":
            request.concurrency_policy = policy_value(value)  # type: ignore[arg-type]
        elif key == "job":
            request.job.CopyFrom(request_message(value))  # type: ignore[arg-type]
        elif value is None:  # (None: unset; for an update's deadline, removed)
            if (
                key == "starting_deadline_seconds"
                and "clear_starting_deadline" in request.DESCRIPTOR.fields_by_name
            ):
                request.clear_starting_deadline = True
        else:
            try:
                setattr(request, key, value)
            except (TypeError, ValueError) as exc:
                raise convert.invalid(key, str(exc)[:200]) from None
            except AttributeError:
                raise convert.invalid(key, "is not a schedule setting") from None


def schedule(name: str, job: JobSpec | None, **options: Unpack[JobOptions]) -> Call[Job]:
    fields: dict[str, Any] = dict(options)
    request_id = fields.pop("request_id", None) or convert.new_request_id()
    fields["labels"] = dict(fields.get("labels") or {})
    fields["depends_on"] = tuple(fields.get("depends_on", ()))
    request = request_message(JobRequest(name=name, job=job, **fields), request_id)
    # (retried: the request_id makes a retry return the job the first attempt made)
    return Call("ScheduleJob", request, _job_of, retry=True)


# --- schedules ------------------------------------------------------------------------------------


def create_schedule(
    name: str, cron: str, job: JobRequest, **options: Unpack[ScheduleOptions]
) -> Call[Schedule]:
    request = pb.CreateScheduleRequest(name=name, cron=cron, job=request_message(job))
    _set_options(request, options)
    # (not retried: a lost answer would make the retry ALREADY_EXISTS)
    return Call("CreateSchedule", request, schedule_of, retry=False)


def get_schedule(name: str) -> Call[Schedule]:
    return Call("GetSchedule", pb.GetScheduleRequest(name=name), schedule_of, retry=True)


def list_schedules(page_token: str, *, name_prefix: str, owner: str, page_size: int) -> Call[Page[Schedule]]:
    request = pb.ListSchedulesRequest(
        page_size=page_size, page_token=page_token, owner=owner, name_prefix=name_prefix
    )

    def result(m: pb.ListSchedulesResponse) -> Page[Schedule]:
        return Page(tuple(schedule_of(s) for s in m.schedules), m.next_page_token)

    return Call("ListSchedules", request, result, retry=True)


def update_schedule(name: str, **changes: Unpack[ScheduleChanges]) -> Call[Schedule]:
    request = pb.UpdateScheduleRequest(name=name)
    _set_options(request, changes)
    return Call("UpdateSchedule", request, schedule_of, retry=True)  # (sets values: idempotent)


def delete_schedule(name: str, *, cancel_jobs: bool) -> Call[ScheduleDeletion]:
    def result(m: pb.DeleteScheduleResponse) -> ScheduleDeletion:
        return ScheduleDeletion(schedule_of(m.schedule), tuple(m.cancelled_job_ids))

    request = pb.DeleteScheduleRequest(name=name, cancel_jobs=cancel_jobs)
    return Call("DeleteSchedule", request, result, retry=False)


def trigger_schedule(name: str) -> Call[Job]:
    # (not retried: each call makes a job)
    return Call("TriggerSchedule", pb.TriggerScheduleRequest(name=name), _job_of, retry=False)


# --- templates ------------------------------------------------------------------------------------


def create_template(name: str, job: JobRequest, *, description: str) -> Call[JobTemplate]:
    request = pb.CreateJobTemplateRequest(name=name, description=description, job=request_message(job))
    return Call("CreateJobTemplate", request, template_of, retry=False)


def get_template(name: str, *, version: int) -> Call[JobTemplate]:
    return Call(
        "GetJobTemplate", pb.GetJobTemplateRequest(name=name, version=version), template_of, retry=True
    )


def list_templates(page_token: str, *, name_prefix: str, page_size: int) -> Call[Page[JobTemplate]]:
    request = pb.ListJobTemplatesRequest(page_size=page_size, page_token=page_token, name_prefix=name_prefix)

    def result(m: pb.ListJobTemplatesResponse) -> Page[JobTemplate]:
        return Page(tuple(template_of(t) for t in m.templates), m.next_page_token)

    return Call("ListJobTemplates", request, result, retry=True)


def update_template(name: str, job: JobRequest | None, *, description: str | None) -> Call[JobTemplate]:
    request = pb.UpdateJobTemplateRequest(name=name)
    if job is not None:
        request.job.CopyFrom(request_message(job))
    if description is not None:
        request.description = description
    # (not retried: each call stores a version)
    return Call("UpdateJobTemplate", request, template_of, retry=False)


def delete_template(name: str) -> Call[int]:
    def result(m: pb.DeleteJobTemplateResponse) -> int:
        return m.versions

    return Call("DeleteJobTemplate", pb.DeleteJobTemplateRequest(name=name), result, retry=False)


# --- rerun ----------------------------------------------------------------------------------------


def rerun(job_id: str, overrides: JobRequest | None, *, request_id: str) -> Call[Job]:
    request = pb.RerunJobRequest(job_id=job_id, request_id=request_id)
    if overrides is not None:
        request.overrides.CopyFrom(request_message(overrides))
    # (retried: the request_id makes a retry return the rerun the first attempt made)
    return Call("RerunJob", request, _job_of, retry=True)
