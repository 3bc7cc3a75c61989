"""Generated messages <-> the client's value types, and the request builders both clients share."""

from __future__ import annotations

import datetime
import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from jobscheduler._generated import jobscheduler_pb2 as pb
from jobscheduler.client._errors import FieldViolation, InvalidArgument
from jobscheduler.client._types import (
    CustomJob,
    EventType,
    Job,
    JobCondition,
    JobEvent,
    JobPage,
    JobPhase,
    JobSpec,
    JobTypeInfo,
    LogLine,
    Priority,
    QueueStatus,
    TimerJob,
)

_UTC = datetime.UTC


def _time(message: Any, field: str) -> datetime.datetime | None:
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


def _enum(cls: Any, name: str, prefix: str) -> Any:
    try:
        return cls(name.removeprefix(prefix))
    except ValueError:
        return cls.UNSPECIFIED


_PHASES = {v: _enum(JobPhase, pb.JobPhase.Name(v), "JOB_PHASE_") for v in pb.JobPhase.values()}
_PRIORITIES = {v: _enum(Priority, pb.JobPriority.Name(v), "JOB_PRIORITY_") for v in pb.JobPriority.values()}
_EVENTS = {v: _enum(EventType, pb.JobEventType.Name(v), "JOB_EVENT_TYPE_") for v in pb.JobEventType.values()}


def _invalid(field: str, description: str) -> InvalidArgument:
    """Bad input found before sending: the same exception the server would raise."""
    return InvalidArgument(
        f"invalid {field}: {description}", field_violations=(FieldViolation(field, description),)
    )


def _member(value: object, field: str, enum: Any, prefix: str) -> int:
    name = str(value)[:64].upper().removeprefix(prefix)
    names: list[str] = list(enum.keys())  # (an EnumTypeWrapper, not a dict)
    if name == "UNSPECIFIED" or f"{prefix}{name}" not in names:
        choices = ", ".join(k.removeprefix(prefix) for k in names if not k.endswith("UNSPECIFIED"))
        raise _invalid(field, f"unknown value {str(value)[:64]!r} (one of {choices})")
    number: int = enum.Value(f"{prefix}{name}")
    return number


def phase_value(phase: JobPhase | str, field: str = "filter.phases") -> int:
    """The proto number of a phase given as a JobPhase or its name (``"running"`` too)."""
    return _member(phase, field, pb.JobPhase, "JOB_PHASE_")


def priority_value(priority: Priority | str | None) -> int:
    if priority is None:
        return 0
    return _member(priority, "priority", pb.JobPriority, "JOB_PRIORITY_")


def job(m: pb.Job) -> Job:
    return Job(
        job_id=m.job_id,
        name=m.name,
        type=m.type,
        phase=_PHASES.get(m.phase, JobPhase.UNSPECIFIED),
        namespace=m.namespace,
        created_at=_time(m, "created_at"),
        started_at=_time(m, "started_at"),
        finished_at=_time(m, "finished_at"),
        message=m.message,
        labels=dict(m.labels),
        reason=m.reason,
        conditions=tuple(
            JobCondition(c.type, c.status, c.reason, c.message, _time(c, "last_transition_time"))
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
        priority=_PRIORITIES.get(m.priority, Priority.UNSPECIFIED),
        queue=m.queue,
        owner=m.owner,
        request_id=m.request_id,
        retry_of=m.retry_of,
        retry_number=m.retry_number,
        max_retries=m.max_retries,
        start_after=_time(m, "start_after"),
        depends_on=tuple(m.depends_on),
        enqueued_at=_time(m, "enqueued_at"),
        admitted_at=_time(m, "admitted_at"),
    )


def event(m: pb.JobEvent) -> JobEvent:
    return JobEvent(
        type=_EVENTS.get(m.type, EventType.UNSPECIFIED),
        job=job(m.job),
        resume_token=m.resume_token,
        time=_time(m, "time"),
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
            _PRIORITIES.get(c.priority, Priority.UNSPECIFIED): c.count for c in m.queued_by_priority
        },
        waiting=m.waiting,
        oldest_queued_age=_duration(m, "oldest_queued_age"),
        oldest_queued_since=_time(m, "oldest_queued_since"),
    )


def _timestamp(value: datetime.datetime, field: str) -> timestamp_pb2.Timestamp:
    if not isinstance(value, datetime.datetime) or value.tzinfo is None:
        raise _invalid(field, "must be a timezone-aware datetime (e.g. datetime.now(datetime.UTC))")
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(_UTC))
    return ts


def new_request_id() -> str:
    """A fresh idempotency key for ScheduleJob (what ``schedule`` uses when given none)."""
    return "py-" + secrets.token_hex(16)


def schedule_request(
    name: str,
    spec: JobSpec,
    *,
    labels: Mapping[str, str] | None,
    priority: Priority | str | None,
    queue: str,
    start_after: datetime.datetime | None,
    delay_seconds: int,
    depends_on: Sequence[str],
    max_retries: int,
    retry_backoff_seconds: int,
    timeout_seconds: int,
    ttl_seconds_after_finished: int | None,
    request_id: str,
) -> pb.ScheduleJobRequest:
    request = pb.ScheduleJobRequest(
        name=name,
        labels=dict(labels or {}),
        priority=priority_value(priority),  # type: ignore[arg-type]
        queue=queue,
        delay_seconds=delay_seconds,
        depends_on=list(depends_on),
        max_retries=max_retries,
        retry_backoff_seconds=retry_backoff_seconds,
        timeout_seconds=timeout_seconds,
        request_id=request_id,
    )
    if isinstance(spec, TimerJob):
        request.timer_job.CopyFrom(
            pb.TimerJob(
                duration_seconds=spec.duration_seconds,
                timer_name=spec.timer_name,
                control_plane_endpoint=spec.control_plane_endpoint,
                image=spec.image,
                log_level=spec.log_level,
                env=dict(spec.env),
            )
        )
    elif isinstance(spec, CustomJob):
        request.custom_job.type = spec.type
        try:
            request.custom_job.params.update(dict(spec.params))
        except (TypeError, ValueError, AttributeError) as exc:
            raise _invalid("custom_job.params", f"must be JSON data (str keys; {exc})") from None
    else:  # pragma: no cover - a new job type must be added here
        raise TypeError(f"unsupported job type {type(spec).__name__}")
    if start_after is not None:
        request.start_after.CopyFrom(_timestamp(start_after, "start_after"))
    if ttl_seconds_after_finished is not None:
        request.ttl_seconds_after_finished = ttl_seconds_after_finished
    return request


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
) -> pb.JobFilter:
    f = pb.JobFilter(
        type=type,
        phases=[phase_value(p, f"filter.phases[{i}]") for i, p in enumerate(phases)],  # type: ignore[misc]
        label_selector=label_selector,
        name_prefix=name_prefix,
        owner=owner,
        queue=queue,
    )
    if created_after is not None:
        f.created_after.CopyFrom(_timestamp(created_after, "filter.created_after"))
    if created_before is not None:
        f.created_before.CopyFrom(_timestamp(created_before, "filter.created_before"))
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
