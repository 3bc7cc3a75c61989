"""ScheduleJobRequest <-> :class:`JobRequest`: what ``schedule``, ``rerun``, schedules and templates
send, and what schedules and templates read back."""

from __future__ import annotations

import dataclasses
from typing import Any

from google.protobuf import json_format

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.client._convert import PRIORITIES, invalid, priority_value, time_of, timestamp
from jobscheduler.client._types import BuiltinJob, CustomJob, JobRequest, JobSpec, TimerJob

#: The ScheduleJobRequest members of the job types (timer_job, container_job, ..., custom_job).
JOB_MEMBERS: frozenset[str] = frozenset(
    f.name for f in pb.ScheduleJobRequest.DESCRIPTOR.oneofs_by_name["job"].fields
)


def _put_spec(request: pb.ScheduleJobRequest, spec: JobSpec) -> None:
    if isinstance(spec, TimerJob):
        # (the dataclass's fields are the message's, by name)
        fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
        request.timer_job.CopyFrom(pb.TimerJob(**{**fields, "env": dict(spec.env)}))
    elif isinstance(spec, CustomJob):
        request.custom_job.type = spec.type
        try:
            request.custom_job.params.update(dict(spec.params))
        except (TypeError, ValueError, AttributeError) as exc:
            raise invalid("custom_job.params", f"must be JSON data (str keys; {exc})") from None
    elif isinstance(spec, BuiltinJob):
        member = f"{spec.type}_job"
        if member not in JOB_MEMBERS or member in ("timer_job", "custom_job"):
            others = ", ".join(
                sorted(m.removesuffix("_job") for m in JOB_MEMBERS - {"timer_job", "custom_job"})
            )
            raise invalid(
                "job", f"{spec.type[:64]!r} is not a built-in type without a class (one of {others})"
            )
        try:
            json_format.ParseDict(dict(spec.params), getattr(request, member))
        except (json_format.ParseError, TypeError, ValueError, AttributeError) as exc:
            raise invalid(member, f"does not fit the {member} message ({str(exc)[:200]})") from None
    else:  # pragma: no cover - a new job type must be added here
        raise TypeError(f"unsupported job type {type(spec).__name__}")


def request_message(job: JobRequest, request_id: str = "") -> pb.ScheduleJobRequest:
    """The ScheduleJobRequest of ``job`` (unset fields left unset)."""
    request = pb.ScheduleJobRequest(
        name=job.name,
        labels=dict(job.labels),
        priority=priority_value(job.priority),  # type: ignore[arg-type]
        queue=job.queue,
        delay_seconds=job.delay_seconds,
        depends_on=list(job.depends_on),
        max_retries=job.max_retries,
        retry_backoff_seconds=job.retry_backoff_seconds,
        timeout_seconds=job.timeout_seconds,
        request_id=request_id,
        template=job.template,
        template_version=job.template_version,
    )
    if job.job is not None:
        _put_spec(request, job.job)
    if job.start_after is not None:
        request.start_after.CopyFrom(timestamp(job.start_after, "start_after"))
    if job.ttl_seconds_after_finished is not None:
        request.ttl_seconds_after_finished = job.ttl_seconds_after_finished
    return request


def _spec(m: pb.ScheduleJobRequest) -> JobSpec | None:
    member = m.WhichOneof("job")
    if member is None:
        return None
    if member == "timer_job":
        values = {f.name: getattr(m.timer_job, f.name) for f in dataclasses.fields(TimerJob)}
        return TimerJob(**{**values, "env": dict(m.timer_job.env)})
    if member == "custom_job":
        return CustomJob(m.custom_job.type, json_format.MessageToDict(m.custom_job.params))
    params: dict[str, Any] = json_format.MessageToDict(getattr(m, member), preserving_proto_field_name=True)
    return BuiltinJob(member.removesuffix("_job"), params)


def job_request(m: pb.ScheduleJobRequest) -> JobRequest:
    """A stored request (a schedule's job, a template's) as a :class:`JobRequest`."""
    return JobRequest(
        name=m.name,
        job=_spec(m),
        labels=dict(m.labels),
        priority=PRIORITIES.get(m.priority) if m.priority else None,
        queue=m.queue,
        max_retries=m.max_retries,
        retry_backoff_seconds=m.retry_backoff_seconds,
        timeout_seconds=m.timeout_seconds,
        ttl_seconds_after_finished=(
            m.ttl_seconds_after_finished if m.HasField("ttl_seconds_after_finished") else None
        ),
        template=m.template,
        template_version=m.template_version,
        start_after=time_of(m, "start_after"),
        delay_seconds=m.delay_seconds,
        depends_on=tuple(m.depends_on),
    )
