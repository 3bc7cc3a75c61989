"""Generated messages <-> the client's value types, and the request builders both clients share."""

from __future__ import annotations

import datetime
import json
import secrets
from collections.abc import Iterable
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.client._errors import FieldViolation, InvalidArgument
from jobscheduler.client._types import (
    EventType,
    Job,
    JobCondition,
    JobEvent,
    JobPage,
    JobPhase,
    JobTypeInfo,
    LogLine,
    Priority,
    QueueStatus,
)

_UTC = datetime.UTC


def time_of(message: Any, field: str) -> datetime.datetime | None:
    if not message.HasField(field):
        return None
    ts: timestamp_pb2.Timestamp = getattr(message, field)
    # (one float, exact to the microsecond for the years 1970..2200: a third of the time)
    return datetime.datetime.fromtimestamp(ts.seconds + ts.nanos // 1000 / 1e6, _UTC)


def _duration(message: Any, field: str) -> datetime.timedelta | None:
    if not message.HasField(field):
        return None
    d: duration_pb2.Duration = getattr(message, field)
    return datetime.timedelta(seconds=d.seconds, microseconds=d.nanos // 1000)


def enum_member(cls: Any, name: str, prefix: str) -> Any:
    try:
        return cls(name.removeprefix(prefix))
    except ValueError:
        return cls.UNSPECIFIED


_PHASES = {v: enum_member(JobPhase, pb.JobPhase.Name(v), "JOB_PHASE_") for v in pb.JobPhase.values()}
PRIORITIES = {
    v: enum_member(Priority, pb.JobPriority.Name(v), "JOB_PRIORITY_") for v in pb.JobPriority.values()
}
_EVENTS = {
    v: enum_member(EventType, pb.JobEventType.Name(v), "JOB_EVENT_TYPE_") for v in pb.JobEventType.values()
}


def invalid(field: str, description: str) -> InvalidArgument:
    """Bad input found before sending: the same exception the server would raise."""
    return InvalidArgument(
        f"invalid {field}: {description}", field_violations=(FieldViolation(field, description),)
    )


def member_value(value: object, field: str, enum: Any, prefix: str) -> int:
    name = str(value)[:64].upper().removeprefix(prefix)
    names: list[str] = list(enum.keys())  # (an EnumTypeWrapper, not a dict)
    if name == "UNSPECIFIED" or f"{prefix}{name}" not in names:
        # (dict.fromkeys: once each, also where the enum has aliases without the prefix)
        choices = ", ".join(
            dict.fromkeys(k.removeprefix(prefix) for k in names if not k.endswith("UNSPECIFIED"))
        )
        raise invalid(field, f"unknown value {str(value)[:64]!r} (one of {choices})")
    number: int = enum.Value(f"{prefix}{name}")
    return number


def phase_value(phase: JobPhase | str, field: str = "filter.phases") -> int:
    """The proto number of a phase given as a JobPhase or its name (``"running"`` too)."""
    return member_value(phase, field, pb.JobPhase, "JOB_PHASE_")


def priority_value(priority: Priority | str | None) -> int:
    if priority is None:
        return 0
    return member_value(priority, "priority", pb.JobPriority, "JOB_PRIORITY_")


def job(m: pb.Job) -> Job:
    return Job(
        job_id=m.job_id,
        name=m.name,
        type=m.type,
        phase=_PHASES.get(m.phase, JobPhase.UNSPECIFIED),
        namespace=m.namespace,
        created_at=time_of(m, "created_at"),
        started_at=time_of(m, "started_at"),
        finished_at=time_of(m, "finished_at"),
        message=m.message,
        labels=dict(m.labels),
        reason=m.reason,
        conditions=tuple(
            JobCondition(c.type, c.status, c.reason, c.message, time_of(c, "last_transition_time"))
            for c in m.conditions
        ),
        active=m.active,
        succeeded=m.succeeded,
        failed=m.failed,
        backoff_limit=m.backoff_limit,
        pod_names=tuple(m.pod_names),
        attempts=m.attempts,
        duration=_duration(m, "duration"),
        termination_reason=m.termination_reason,
        exit_code=m.exit_code if m.HasField("exit_code") else None,
        priority=PRIORITIES.get(m.priority, Priority.UNSPECIFIED),
        queue=m.queue,
        owner=m.owner,
        request_id=m.request_id,
        retry_of=m.retry_of,
        retry_number=m.retry_number,
        max_retries=m.max_retries,
        start_after=time_of(m, "start_after"),
        depends_on=tuple(m.depends_on),
        enqueued_at=time_of(m, "enqueued_at"),
        admitted_at=time_of(m, "admitted_at"),
        schedule=m.schedule,
        scheduled_at=time_of(m, "scheduled_at"),
        template=m.template,
        template_version=m.template_version,
        rerun_of=m.rerun_of,
    )


def event(m: pb.JobEvent) -> JobEvent:
    return JobEvent(
        type=_EVENTS.get(m.type, EventType.UNSPECIFIED),
        job=job(m.job),
        resume_token=m.resume_token,
        time=time_of(m, "time"),
    )


def page(m: pb.ListJobsResponse) -> JobPage:
    return JobPage(tuple(job(j) for j in m.jobs), m.next_page_token, m.resume_token)


def log_line(m: pb.LogLine) -> LogLine:
    return LogLine(m.line, m.attempt, m.pod_name)


def job_type(m: pb.JobType) -> JobTypeInfo:
    try:
        schema = json.loads(m.parameters_schema) if m.parameters_schema else {}
    except ValueError:
        schema = {}
    return JobTypeInfo(
        name=m.name,
        request_field=m.request_field,
        description=m.description,
        builtin=m.builtin,
        package=m.package,
        version=m.version,
        parameters_schema=schema if isinstance(schema, dict) else {},
    )


def queue(m: pb.QueueStatus) -> QueueStatus:
    return QueueStatus(
        name=m.name,
        max_running=m.max_running,
        running=m.running,
        queued=m.queued,
        queued_by_priority={
            PRIORITIES.get(c.priority, Priority.UNSPECIFIED): c.count for c in m.queued_by_priority
        },
        waiting=m.waiting,
        oldest_queued_age=_duration(m, "oldest_queued_age"),
        oldest_queued_since=time_of(m, "oldest_queued_since"),
    )


def timestamp(value: datetime.datetime, field: str) -> timestamp_pb2.Timestamp:
    if not isinstance(value, datetime.datetime) or value.tzinfo is None:
        raise invalid(field, "must be a timezone-aware datetime (e.g. datetime.now(datetime.UTC))")
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(_UTC))
    return ts


def new_request_id() -> str:
    """A fresh idempotency key for ScheduleJob (what ``schedule`` uses when given none)."""
    return "py-" + secrets.token_hex(16)


def job_filter(
    *,
    type: str = "",
    phases: Iterable[JobPhase | str] = (),
    label_selector: str = "",
    name_prefix: str = "",
    created_after: datetime.datetime | None = None,
    created_before: datetime.datetime | None = None,
    owner: str = "",
    queue: str = "",
    schedule: str = "",
    rerun_of: str = "",
    template: str = "",
) -> pb.JobFilter:
    f = pb.JobFilter(
        type=type,
        phases=[phase_value(p, f"filter.phases[{i}]") for i, p in enumerate(phases)],  # type: ignore[misc]
        label_selector=label_selector,
        name_prefix=name_prefix,
        owner=owner,
        queue=queue,
        schedule=schedule,
        rerun_of=rerun_of,
        template=template,
    )
    if created_after is not None:
        f.created_after.CopyFrom(timestamp(created_after, "filter.created_after"))
    if created_before is not None:
        f.created_before.CopyFrom(timestamp(created_before, "filter.created_before"))
    return f


def after_reconnect(first: JobEvent) -> JobEvent:
    """WatchJob's first event after a reconnect (the current state, as CREATED) as the change it
    reports: a terminal phase as its own event type, anything else as UPDATED."""
    kind = {
        JobPhase.SUCCEEDED: EventType.SUCCEEDED,
        JobPhase.FAILED: EventType.FAILED,
        JobPhase.CANCELLED: EventType.CANCELLED,
    }.get(first.job.phase, EventType.UPDATED)
    return JobEvent(kind, first.job, first.resume_token, first.time)
