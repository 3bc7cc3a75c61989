"""Schedule messages <-> core.schedules values (the job's request through api.convert)."""

from __future__ import annotations

from typing import Any, Final

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.api.convert_templates import optional_job, schedule_job_message
from jobscheduler.core.errors import InvalidArgument
from jobscheduler.core.model import ScheduleRequest
from jobscheduler.core.schedules.model import ConcurrencyPolicy, ScheduleSpec, ScheduleView
from jobscheduler.core.schedules.spec import ScheduleChanges

POLICIES: Final[dict[int, ConcurrencyPolicy]] = {
    pb.CONCURRENCY_POLICY_UNSPECIFIED: ConcurrencyPolicy.ALLOW,
    pb.CONCURRENCY_POLICY_ALLOW: ConcurrencyPolicy.ALLOW,
    pb.CONCURRENCY_POLICY_FORBID: ConcurrencyPolicy.FORBID,
    pb.CONCURRENCY_POLICY_REPLACE: ConcurrencyPolicy.REPLACE,
}
POLICIES_BACK: Final = {
    ConcurrencyPolicy.ALLOW: pb.CONCURRENCY_POLICY_ALLOW,
    ConcurrencyPolicy.FORBID: pb.CONCURRENCY_POLICY_FORBID,
    ConcurrencyPolicy.REPLACE: pb.CONCURRENCY_POLICY_REPLACE,
}


def _policy(value: int) -> ConcurrencyPolicy:
    if value not in POLICIES:
        raise InvalidArgument.field("concurrency_policy", f"unknown policy {value} (ALLOW, FORBID, REPLACE)")
    return POLICIES[value]


def _job(request: pb.CreateScheduleRequest) -> ScheduleRequest:
    """The schedule's job (an unset one is refused by JobService.prepare, naming job.*)."""
    return optional_job(request) or ScheduleRequest(name="", job_field=None, params={})


def _optional(message: Any, name: str) -> Any:
    return getattr(message, name) if message.HasField(name) else None


def spec(request: pb.CreateScheduleRequest) -> ScheduleSpec:
    job = _job(request)
    kwargs: dict[str, Any] = {}
    for name in ("successful_jobs_history_limit", "failed_jobs_history_limit"):
        if request.HasField(name):
            kwargs[name] = getattr(request, name)
    return ScheduleSpec(
        name=request.name,
        cron=request.cron,
        job=job,
        time_zone=request.time_zone,
        concurrency_policy=_policy(request.concurrency_policy),
        starting_deadline_seconds=_optional(request, "starting_deadline_seconds"),
        suspend=request.suspend,
        description=request.description,
        template=job.template,
        template_version=job.template_version,
        **kwargs,
    )


def changes(request: pb.UpdateScheduleRequest) -> ScheduleChanges:
    policy = _optional(request, "concurrency_policy")
    return ScheduleChanges(
        cron=_optional(request, "cron"),
        time_zone=_optional(request, "time_zone"),
        job=optional_job(request),
        concurrency_policy=_policy(policy) if policy is not None else None,
        starting_deadline_seconds=_optional(request, "starting_deadline_seconds"),
        clear_starting_deadline=request.clear_starting_deadline,
        suspend=_optional(request, "suspend"),
        successful_jobs_history_limit=_optional(request, "successful_jobs_history_limit"),
        failed_jobs_history_limit=_optional(request, "failed_jobs_history_limit"),
        description=_optional(request, "description"),
    )


def job_request(job: ScheduleRequest) -> pb.ScheduleJobRequest:
    """The stored job as the ScheduleJobRequest that makes it (template and version included)."""
    message = schedule_job_message(job)
    message.template, message.template_version = job.template, job.template_version
    return message


def schedule(view: ScheduleView) -> pb.Schedule:
    s, spec_, status = view.schedule, view.schedule.spec, view.schedule.status
    message = pb.Schedule(
        name=s.name,
        cron=spec_.cron,
        time_zone=spec_.time_zone,
        job=job_request(spec_.job),
        concurrency_policy=POLICIES_BACK[spec_.concurrency_policy],
        suspend=spec_.suspend,
        successful_jobs_history_limit=spec_.successful_jobs_history_limit,
        failed_jobs_history_limit=spec_.failed_jobs_history_limit,
        description=spec_.description,
        owner=s.owner,
        active_job_ids=list(view.active_job_ids),
        missed_runs=status.missed_runs,
        skipped_runs=status.skipped_runs,
        template_version=spec_.template_version,
    )
    if spec_.starting_deadline_seconds is not None:
        message.starting_deadline_seconds = spec_.starting_deadline_seconds
    for name, value in (
        ("created_at", s.created_at),
        ("updated_at", s.updated_at),
        ("last_schedule_time", status.last_schedule_time),
        ("last_successful_time", status.last_successful_time),
        ("next_run_time", view.next_run_time),
        ("last_missed_time", status.last_missed_time),
    ):
        if value is not None:
            getattr(message, name).FromDatetime(value)
    return message
